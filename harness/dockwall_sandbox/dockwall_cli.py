"""Run the dockwall command inside a sandbox's Docker host namespace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from .netns import enter_argv
from .pythonpath import child_env
from .sandbox import Sandbox


def dockwall(
    sandbox: Sandbox, *args: str, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`dockwall ARGS [-p POLICY] --docker-host <the sandbox's engine>` in the host namespace."""
    argv = [sys.executable, "-m", "dockwall", *args]
    if policy is not None:
        argv += ["-p", str(policy)]
    if args and args[0] != "remove":
        argv += ["--docker-host", sandbox.docker_host]
    return sandbox.run_in_host(argv, check=False, env=_env(sandbox), timeout=120, as_dockwall=True)


class RunningDaemon:
    """`dockwall run` in the sandbox's host namespace, logging to a file; stopped by pid."""

    def __init__(
        self,
        sandbox: Sandbox,
        policy: Path,
        log_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "dockwall",
            "run",
            "-p",
            str(policy),
            "--docker-host",
            sandbox.docker_host,
            "--log-level",
            "debug",
            *extra,
        ]
        self.log_path = log_path
        self.extra = extra  # the options it was started with, to start another alike
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            enter_argv(sandbox.host_ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**_env(sandbox), **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 20.0, after: int = 0) -> bool:
        """Wait until `text` appears in the log past character `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return True
            if self.proc.poll() is not None:
                return text in self.log()[after:]
            time.sleep(0.05)
        return False

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def _env(sandbox: Sandbox) -> dict[str, str]:
    """PYTHONPATH for dockwall; a record of what dockwall applied of the sandbox's own."""
    env = child_env()
    env["DOCKWALL_STATE"] = str(sandbox.dirs.run / "dockwall-applied.json")
    return env
