"""Judging probes against an oracle, for the real-packet tests."""

from __future__ import annotations

from collections.abc import Callable

from dockwall_sandbox.matrix import Case


def mismatches(observed: dict[Case, bool], expected: Callable[[Case], bool]) -> list[str]:
    return [
        f"{case}: expected {'open' if expected(case) else 'blocked'}, "
        f"got {'open' if ok else 'blocked'}"
        for case, ok in observed.items()
        if ok != expected(case)
    ]
