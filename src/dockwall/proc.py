"""Run a program with a timeout, never through a shell. The one place dockwall starts processes."""

from __future__ import annotations

import subprocess
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
