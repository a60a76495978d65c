"""Fixtures for tests that run a real Docker engine in network namespaces.

Outside CI a missing engine (or not being root) skips with the reason; with
CI=true it fails, because a skipped firewall test proves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from dockwall_sandbox import (
    ENGINES,
    Sandbox,
    SeededSandbox,
    cleanup_leftovers,
    unavailable_reason,
)

ENGINE_NAMES = tuple(ENGINES)


def _require(engine: str) -> None:
    reason = unavailable_reason(engine)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_engine() -> Callable[[str], None]:
    """Call with an engine name: skips (outside CI) or fails (CI=true) if it cannot run."""
    return _require


@pytest.fixture(scope="session", autouse=True)
def leftovers_removed() -> list[str]:
    """Run ids of earlier, killed runs, removed before this session's first test."""
    if os.geteuid() != 0:
        return []
    return cleanup_leftovers()


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def seeded_sandbox(
    request: pytest.FixtureRequest, leftovers_removed: list[str]
) -> Iterator[SeededSandbox]:
    """A sandbox per engine with the seed scenario running, shared by one test module."""
    engine: str = request.param
    _require(engine)
    with Sandbox(engine) as sandbox:
        scenario = sandbox.start_seed_scenario()
        yield SeededSandbox(engine=engine, sandbox=sandbox, scenario=scenario)
