"""Starting and stopping one dockerd inside the sandbox's HOST namespace."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from . import cgroup
from ._proc import (
    DOCKER_CLI,
    NSENTER,
    SandboxError,
    cmdline,
    pid_alive,
    run,
    stop_pid,
    wait_gone,
)
from .engines import Engine
from .netns import NETNS_DIR
from .state import StateDirs
from .topology import DEFAULT_BRIDGE_BIP, DEFAULT_BRIDGE_V6

STORAGE_DRIVER = "overlay2"


def dockerd_argv(engine: Engine, dirs: StateDirs, host_ns: str, ipv6: bool = True) -> list[str]:
    """The full command line: nsenter keeps the machine's /sys, so cgroups work. ipv6=False
    is Docker's default config: no IPv6 on docker0 (the host's interfaces still have it)."""
    return [
        NSENTER,
        f"--net={NETNS_DIR / host_ns}",
        "--",
        str(engine.dockerd),
        f"--config-file={dirs.run / 'daemon.json'}",
        f"--data-root={dirs.data}",
        f"--exec-root={dirs.exec_root}",
        f"--pidfile={dirs.dockerd_pidfile}",
        f"--host=unix://{dirs.socket}",
        f"--storage-driver={STORAGE_DRIVER}",
        "--iptables=true",
        *(["--ipv6", f"--fixed-cidr-v6={DEFAULT_BRIDGE_V6}"] if ipv6 else []),
        f"--bip={DEFAULT_BRIDGE_BIP}",
        "--shutdown-timeout=2",
        *engine.extra_flags,
    ]


def docker_env(dirs: StateDirs) -> dict[str, str]:
    """Environment for the docker CLI talking to this sandbox only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
    env["DOCKER_HOST"] = f"unix://{dirs.socket}"
    env["DOCKER_CONFIG"] = str(dirs.run / "cli")
    return env


def start(
    engine: Engine, dirs: StateDirs, host_ns: str, timeout: float = 60.0, ipv6: bool = True
) -> int:
    """Start dockerd and wait until its API answers. Returns its pid."""
    (dirs.run / "daemon.json").write_text(engine.daemon_json + "\n")
    (dirs.run / "cli").mkdir(exist_ok=True)
    env = {"PATH": engine.path_env(), "HOME": str(dirs.run)}
    with dirs.log.open("ab") as log:
        proc = subprocess.Popen(
            dockerd_argv(engine, dirs, host_ns, ipv6),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    cgroup.place(proc.pid, dirs.run_id)  # nsenter execs dockerd: the same pid
    _wait_ready(proc, dirs, timeout)
    return proc.pid


def _wait_ready(proc: subprocess.Popen[bytes], dirs: StateDirs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"dockerd exited with {proc.returncode}:\n{log_tail(dirs)}")
        if dirs.socket.exists() and _answers(dirs, min(10.0, deadline - time.monotonic())):
            return
        time.sleep(0.1)
    raise SandboxError(f"dockerd did not answer within {timeout}s:\n{log_tail(dirs)}")


def _answers(dirs: StateDirs, timeout: float) -> bool:
    """True if the API answers. A socket left by a killed dockerd, or one whose daemon is
    still restoring its containers, may accept and then not answer in time: not yet."""
    try:
        ping = run(
            [DOCKER_CLI, "version", "--format", "{{.Server.Version}}"],
            env=docker_env(dirs),
            check=False,
            timeout=max(timeout, 1.0),
        )
    except SandboxError:
        return False
    return ping.returncode == 0


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our child (dockerd is), so that no
    zombie keeps its pid "alive" for the next dockerd's pid-file check."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def log_tail(dirs: StateDirs, lines: int = 40) -> str:
    try:
        text = dirs.log.read_text(errors="replace")
    except OSError:
        return "(no dockerd log)"
    return "\n".join(text.splitlines()[-lines:])


def is_our_dockerd(pid: int, dirs: StateDirs) -> bool:
    argv = cmdline(pid)
    return (
        bool(argv)
        and argv[0].endswith("dockerd")
        and any(str(dirs.exec_root) in arg for arg in argv)
    )


def terminate(pid: int, dirs: StateDirs, grace: float = 60.0) -> None:
    """Stop dockerd cleanly (SIGTERM, wait): it stops its containers and its containerd.

    Unlike :func:`stop`, nothing else is touched: what dockerd leaves running stays, as
    on a host where the service is restarted.
    """
    if not is_our_dockerd(pid, dirs):
        raise SandboxError(f"pid {pid} is not this sandbox's dockerd")
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, grace):
        raise SandboxError(f"dockerd {pid} did not stop within {grace}s:\n{log_tail(dirs)}")
    _reap(pid)


def crash(pid: int, dirs: StateDirs) -> None:
    """SIGKILL dockerd alone, as a crash would: containerd (if it outlives its parent),
    the shims and the containers keep running, and the pid file and socket stay behind."""
    if not is_our_dockerd(pid, dirs):
        raise SandboxError(f"pid {pid} is not this sandbox's dockerd")
    os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 10.0):
        raise SandboxError(f"dockerd {pid} survived SIGKILL")
    _reap(pid)
    _settle_containerd(dirs)


def _settle_containerd(dirs: StateDirs, grace: float = 2.0) -> None:
    """Let the managed containerd of a killed dockerd finish dying, as init would.

    Docker's containerd dies with its parent (parent-death signal) and is re-parented to
    pid 1. A real init reaps it at once; where pid 1 does not reap (as in some VMs), the
    zombie keeps its pid "alive" and the next dockerd waits ten seconds for a containerd
    that will never answer. A containerd that is still running is left alone: the next
    dockerd connects to it, as on a real host.
    """
    for path, pid in _pidfiles(dirs.exec_root, "containerd.pid"):
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:  # still dying
            time.sleep(0.05)
        if pid_alive(pid):
            continue
        deadline = time.monotonic() + grace
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:  # a zombie
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)  # dead, never reaped: its pid file is stale


def stop(pid: int, dirs: StateDirs) -> None:
    """Stop dockerd (by pid), then whatever of its containerd and shims is left."""
    if pid_alive(pid) and is_our_dockerd(pid, dirs):
        stop_pid(pid, grace=20.0)
    stop_runtime_leftovers(dirs)


def _pidfiles(root: Path, name: str) -> list[tuple[Path, int]]:
    found: list[tuple[Path, int]] = []
    if not root.is_dir():
        return found
    for path in root.rglob(name):
        try:
            found.append((path, int(path.read_text().strip())))
        except (OSError, ValueError):
            continue
    return found


def _in_container_cgroup(pid: int, container_id: str) -> bool:
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def stop_runtime_leftovers(dirs: StateDirs) -> list[int]:
    """Stop container inits, shims and containerd whose pid files are in ``dirs``.

    Every pid is checked against /proc before it is signalled: a container
    init must sit in its container's cgroup, a shim or containerd must name our
    exec-root on its command line (or, for a shim, its container id).
    """
    stopped: list[int] = []
    root = dirs.exec_root
    for path, pid in _pidfiles(root, "init.pid"):
        if pid_alive(pid) and _in_container_cgroup(pid, path.parent.name):
            stop_pid(pid, grace=2.0)
            stopped.append(pid)
    for path, pid in _pidfiles(root, "shim.pid"):
        argv = cmdline(pid)
        if (
            pid_alive(pid)
            and any("containerd-shim" in a for a in argv[:1])
            and (path.parent.name in argv or any(str(root) in a for a in argv))
        ):
            stop_pid(pid, grace=5.0)
            stopped.append(pid)
    for _path, pid in _pidfiles(root, "containerd.pid"):
        argv = cmdline(pid)
        if (
            pid_alive(pid)
            and argv
            and argv[0].endswith("containerd")
            and any(str(root) in a for a in argv)
        ):
            stop_pid(pid, grace=10.0)
            stopped.append(pid)
    return stopped
