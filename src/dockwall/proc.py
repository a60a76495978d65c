"""Run a program with a timeout, never through a shell. The one place dockwall starts processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

from dockwall.errors import BackendError

DEFAULT_TIMEOUT = 30.0  # seconds


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run argv, return its stdout. A non-zero exit or a timeout raises BackendError.

    On timeout subprocess.run kills the child before raising, so nothing is left hanging.
    """
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BackendError(
            f"{argv[0]} did not finish within {timeout:g} s; it was killed"
        ) from None
    except OSError as exc:
        raise BackendError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit code {done.returncode}"
        raise BackendError(f"{' '.join(argv)} failed: {detail}")
    return done.stdout


def run_all(
    jobs: Sequence[tuple[Sequence[str], str]], timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """Run several programs at once (argv, stdin each) and wait for all. Returns one error
    message per job, "" where it succeeded. A job still running at timeout is killed."""
    started: list[subprocess.Popen[str] | str] = []
    for argv, _ in jobs:
        try:
            started.append(
                subprocess.Popen(
                    list(argv),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
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
