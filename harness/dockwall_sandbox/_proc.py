"""Running outside programs: always an argument list, always a timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

IP = "/usr/sbin/ip"
NSENTER = "/usr/bin/nsenter"
UMOUNT = "/usr/bin/umount"
DOCKER_CLI = "/usr/bin/docker"


class SandboxError(RuntimeError):
    """Something in setting up, using or tearing down a sandbox failed."""


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    timeout: float = 30.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output as text.

    Raises :class:`SandboxError` (with stdout and stderr in the message) when
    ``check`` is true and the command fails or times out.
    """
    data = input.encode() if isinstance(input, str) else input
    try:
        done = subprocess.run(
            list(argv),
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=None if env is None else dict(env),
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"timed out after {timeout}s: {list(argv)}") from exc
    result = subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise SandboxError(
            f"exit {result.returncode}: {list(argv)}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid``, or an empty list if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; True if it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    _reap(pid)
    return not pid_alive(pid)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for any other pid this fails harmlessly.
    with contextlib.suppress(OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL it."""
    if not pid_alive(pid):
        _reap(pid)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, grace):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_gone(pid, 5.0):
        raise SandboxError(f"process {pid} survived SIGKILL")
