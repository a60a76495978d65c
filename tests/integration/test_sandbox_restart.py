"""The harness restarts its Docker engine like a host's service manager would.

A clean restart (SIGTERM: dockerd stops its containers) and a crash (SIGKILL: the shims and
containers outlive dockerd, and the next dockerd stops them, having no live restore) both
bring back every container with a restart policy, at its fixed address where it has one,
with its published ports answering again. Containers without a restart policy stay down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from dockwall_sandbox import ENGINES, ProbeCase, Sandbox
from dockwall_sandbox import topology as topo

pytestmark = pytest.mark.integration

FIXED = IPv4Address("192.0.2.200")  # in dbnet (192.0.2.128/25)
ALWAYS = {"www-nginx": (80, 443), "admin-app": (8080,), "db": (5432,), "fixed": (9001,)}
ONCE = {"once": 9002}


@pytest.fixture(scope="module", params=list(ENGINES))
def sandbox(
    request: pytest.FixtureRequest,
    require_engine: Callable[[str], None],
    leftovers_removed: list[str],
) -> Iterator[Sandbox]:
    """The seed scenario with --restart always, a fixed-address container on dbnet, and one
    container without a restart policy."""
    engine: str = request.param
    require_engine(engine)
    with Sandbox(engine) as box:
        box.start_seed_scenario(restart="always", stop_timeout=1)
        box.start_container(
            "fixed", [(9001, 80)], network="dbnet", ip=FIXED, restart="always", stop_timeout=1
        )
        box.start_container("once", [(9002, 80)], stop_timeout=1)
        yield box


def published_cases() -> list[ProbeCase]:
    ports = [port for ports in ALWAYS.values() for port in ports]
    return [
        (source, target, port)
        for source, target in (
            (topo.WAN_STRANGER_4, topo.WAN_LINK.host4),
            (topo.WAN_STRANGER_6, topo.WAN_LINK.host6),
            (topo.LAN_STRANGER_4, topo.LAN_LINK.host4),
        )
        for port in ports
    ]


def running_names(box: Sandbox) -> set[str]:
    return set(box.docker("ps", "--format", "{{.Names}}").stdout.split())


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "crash"])
def test_restart_brings_back_restart_always_containers(sandbox: Sandbox, crash: bool) -> None:
    before = sandbox.dockerd_pid
    if "once" not in running_names(sandbox):  # the previous case left it down
        sandbox.docker("start", "once")
    assert running_names(sandbox) == {*ALWAYS, *ONCE}

    sandbox.restart_engine(crash=crash)

    assert sandbox.dockerd_pid is not None and sandbox.dockerd_pid != before
    infos = {info.name: info for info in sandbox.wait_running(list(ALWAYS), timeout=60)}
    assert infos["fixed"].ipv4 == FIXED
    assert infos["db"].ipv4 in topo.DBNET_V4
    assert running_names(sandbox) == set(ALWAYS)  # "once" has no restart policy
    cases = published_cases()
    assert sandbox.probe_auto(cases) == [True] * len(cases), sandbox.firewall_dump()


def test_the_engine_still_runs_new_containers(sandbox: Sandbox) -> None:
    """After the restarts above, the engine is whole: a new container publishes a port."""
    sandbox.start_container("late", [(9003, 80)], stop_timeout=1)
    try:
        assert sandbox.probe_auto([(topo.WAN_STRANGER_4, topo.WAN_LINK.host4, 9003)]) == [True]
    finally:
        sandbox.remove_container("late")
