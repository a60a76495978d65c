"""Run a program with a timeout, never through a shell. The one place dockwall starts processes."""

from __future__ import annotations

import collections
import os
import subprocess
import time
from collections.abc import Sequence

from dockwall.errors import BackendError

DEFAULT_TIMEOUT = 30.0  # seconds

# The latest children's pids: the kernel names the process behind each nftables change, and
# the daemon's watch of those changes skips dockwall's own.
CHILDREN: collections.deque[int] = collections.deque(maxlen=64)


def ours(pid: int) -> bool:
    """Whether pid is this process or one of its latest children."""
    return pid == os.getpid() or pid in CHILDREN


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run argv, return its stdout. A non-zero exit or a timeout raises BackendError; on
    timeout the child is killed before raising, so nothing is left hanging."""
    try:
        child = _start(argv)
    except OSError as exc:
        raise BackendError(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        out, err = child.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise BackendError(
            f"{argv[0]} did not finish within {timeout:g} s; it was killed"
        ) from None
    if child.returncode != 0:
        detail = err.strip() or f"exit code {child.returncode}"
        raise BackendError(f"{' '.join(argv)} failed: {detail}")
    return out


def _start(argv: Sequence[str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    CHILDREN.append(child.pid)
    return child


def run_all(
    jobs: Sequence[tuple[Sequence[str], str]], timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """Run several programs at once (argv, stdin each) and wait for all. Returns one error
    message per job, "" where it succeeded. A job still running at timeout is killed."""
    started: list[subprocess.Popen[str] | str] = []
    for argv, _ in jobs:
        try:
            started.append(_start(argv))
        except OSError as exc:
            started.append(f"cannot run {argv[0]}: {exc.strerror}")
    deadline = time.monotonic() + timeout
    return [
        _finish(child, argv, stdin, deadline)
        for child, (argv, stdin) in zip(started, jobs, strict=True)
    ]


def _finish(
    child: subprocess.Popen[str] | str, argv: Sequence[str], stdin: str, deadline: float
) -> str:
    if isinstance(child, str):
        return child
    try:
        _, err = child.communicate(stdin, timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return f"{argv[0]} did not finish in time; it was killed"
    if child.returncode != 0:
        return f"{' '.join(argv)} failed: {err.strip() or child.returncode}"
    return ""
