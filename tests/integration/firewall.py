"""Judging probes against an oracle, for the real-packet tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from dockwall_sandbox.matrix import Case


def mismatches(observed: dict[Case, bool], expected: Callable[[Case], bool]) -> list[str]:
    return [
        f"{case}: expected {'open' if expected(case) else 'blocked'}, "
        f"got {'open' if ok else 'blocked'}"
        for case, ok in observed.items()
        if ok != expected(case)
    ]


def eventually(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.1) -> bool:
    """Whether check() held within timeout (polled every `every` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False
