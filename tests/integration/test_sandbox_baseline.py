"""The harness itself, with no dockwall rules: plain Docker behaviour on each engine.

These tests pin down what an unprotected Docker host does, so that firewall
tests can show what dockwall changes. Observed behaviour that differs between
engines is asserted per engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest

from dockwall_sandbox import (
    ENGINES,
    ContainerInfo,
    ProbeCase,
    Sandbox,
    SeededSandbox,
    Side,
    cleanup_leftovers,
)
from dockwall_sandbox import topology as topo
from dockwall_sandbox._proc import cmdline, pid_alive
from dockwall_sandbox.netns import list_namespaces
from dockwall_sandbox.state import StateDirs

pytestmark = pytest.mark.integration

PUBLISHED = {"www-nginx": (80, 443), "admin-app": (8080,), "db": (5432,)}

# Packets routed straight at a container's own address (no DNAT), from outside.
# Docker 28 and 29 drop them in raw PREROUTING (29's nftables backend in its chain
# raw-PREROUTING, "DROP DIRECT ACCESS"); 20.10 forwards them to published container
# ports (and its FORWARD policy DROP stops the rest).
DIRECT_ROUTING_REACHES_PUBLISHED = {"20.10": True, "28": False, "29": False, "29-nftables": False}

# Docker sets the FORWARD policy to DROP when it turns IPv4 forwarding on.
# The sandbox turns IPv6 forwarding on itself: 20.10 sets both policies to DROP
# anyway, 28 and 29 leave the ip6tables policy at ACCEPT (their DOCKER chain ends in a
# DROP per bridge instead). Docker 29's nftables backend writes no iptables rule at all
# (test_nftables_mode_tables).
IP6_FORWARD_POLICY = {"20.10": "DROP", "28": "ACCEPT", "29": "ACCEPT"}


def host_address(side: Side, version: int) -> IPv4Address | IPv6Address:
    link = topo.WAN_LINK if side is Side.WAN else topo.LAN_LINK
    return link.host4 if version == 4 else link.host6


def test_engine_answers_through_the_2010_cli(seeded_sandbox: SeededSandbox) -> None:
    version = seeded_sandbox.sandbox.engine_version()
    major = int(version.split(".")[0])
    if seeded_sandbox.engine == "20.10":
        assert version.startswith("20.10.")
    else:
        assert major >= 28


@pytest.mark.parametrize("side", [Side.WAN, Side.LAN])
@pytest.mark.parametrize("version", [4, 6])
def test_published_ports_open_to_strangers(
    seeded_sandbox: SeededSandbox, side: Side, version: int
) -> None:
    strangers: dict[tuple[Side, int], IPv4Address | IPv6Address] = {
        (Side.WAN, 4): topo.WAN_STRANGER_4,
        (Side.WAN, 6): topo.WAN_STRANGER_6,
        (Side.LAN, 4): topo.LAN_STRANGER_4,
        (Side.LAN, 6): topo.LAN_STRANGER_6,
    }
    stranger = strangers[(side, version)]
    target = host_address(side, version)
    ports = [port for ports in PUBLISHED.values() for port in ports]
    cases: list[ProbeCase] = [(stranger, target, port) for port in ports]
    cases.append((stranger, target, 9999))  # nothing published there
    results = seeded_sandbox.sandbox.probe(side, cases)
    assert results == [True] * len(ports) + [False]


def test_published_ports_match_the_scenario(seeded_sandbox: SeededSandbox) -> None:
    for name, ports in PUBLISHED.items():
        info = seeded_sandbox.scenario[name]
        assert info.host_ports() == ports
        assert info.ipv6 is not None
        assert {port.host_ip for port in info.published} == {"0.0.0.0", "::"}
    assert seeded_sandbox.scenario["db"].network == "dbnet"
    assert seeded_sandbox.scenario["db"].ipv4 in topo.DBNET_V4


def test_ipv6_publishing_is_kernel_dnat(seeded_sandbox: SeededSandbox) -> None:
    """IPv6 clients reach the container with their own address (no userland proxy).

    So a firewall in FORWARD sees IPv6 published traffic, on every engine.
    """
    sandbox = seeded_sandbox.sandbox
    admin: ContainerInfo = seeded_sandbox.scenario["admin-app"]
    assert sandbox.probe(Side.WAN, [(topo.WAN_ADMIN2_6, topo.WAN_LINK.host6, 8080)]) == [True]
    flows = sandbox.run_in_host(
        ["/usr/sbin/conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--orig-port-dst", "8080"]
    ).stdout
    assert f"src={topo.WAN_ADMIN2_6} dst={topo.WAN_LINK.host6}" in flows
    assert f"src={admin.ipv6} dst={topo.WAN_ADMIN2_6}" in flows


def test_direct_routing_to_containers(seeded_sandbox: SeededSandbox) -> None:
    sandbox, scenario = seeded_sandbox.sandbox, seeded_sandbox.scenario
    cases: list[ProbeCase] = []
    for info in scenario.containers.values():
        assert info.ipv6 is not None
        for port in info.listen_ports:
            cases += [
                (topo.WAN_STRANGER_4, info.ipv4, port),
                (topo.WAN_STRANGER_6, info.ipv6, port),
            ]
    expected = DIRECT_ROUTING_REACHES_PUBLISHED[seeded_sandbox.engine]
    assert sandbox.probe(Side.WAN, cases) == [expected] * len(cases), sandbox.firewall_dump()


def test_direct_routing_to_unpublished_port_is_dropped(seeded_sandbox: SeededSandbox) -> None:
    sandbox = seeded_sandbox.sandbox
    extra = sandbox.start_container("extra", [(8081, 80)], listen=(80, 9000))
    try:
        assert extra.ipv6 is not None
        cases: list[ProbeCase] = [
            (topo.WAN_STRANGER_4, topo.WAN_LINK.host4, 8081),
            (topo.WAN_STRANGER_4, extra.ipv4, 9000),
            (topo.WAN_STRANGER_6, extra.ipv6, 9000),
        ]
        assert sandbox.probe(Side.WAN, cases) == [True, False, False]
    finally:
        sandbox.remove_container("extra")


def test_forward_policies(seeded_sandbox: SeededSandbox) -> None:
    sandbox = seeded_sandbox.sandbox
    sysctl = sandbox.run_in_host(["/usr/sbin/sysctl", "-n", "net.ipv4.ip_forward"]).stdout
    assert sysctl.strip() == "1"
    if seeded_sandbox.engine not in IP6_FORWARD_POLICY:  # Docker's nftables backend
        assert sandbox.run_in_host(["/usr/sbin/iptables-save"]).stdout.strip() == ""
        assert sandbox.run_in_host(["/usr/sbin/ip6tables-save"]).stdout.strip() == ""
        return
    v4 = sandbox.run_in_host(["/usr/sbin/iptables", "-S", "FORWARD"]).stdout.splitlines()
    v6 = sandbox.run_in_host(["/usr/sbin/ip6tables", "-S", "FORWARD"]).stdout.splitlines()
    assert v4[0] == "-P FORWARD DROP"
    assert v6[0] == f"-P FORWARD {IP6_FORWARD_POLICY[seeded_sandbox.engine]}"
    assert "-A FORWARD -j DOCKER-USER" in v4


def test_nftables_mode_tables(seeded_sandbox: SeededSandbox) -> None:
    """Docker 29's nftables backend: its own tables, a forward base chain at priority
    filter with policy accept, per-bridge drops of unpublished ports, and no DOCKER-USER
    (no iptables table at all: test_forward_policies). On the iptables engines, no
    docker-bridges table."""
    sandbox = seeded_sandbox.sandbox
    tables = sandbox.run_in_host(["/usr/sbin/nft", "list", "tables"]).stdout.splitlines()
    if seeded_sandbox.engine != "29-nftables":
        assert not [line for line in tables if "docker-bridges" in line]
        return
    assert set(tables) == {"table ip docker-bridges", "table ip6 docker-bridges"}
    for family in ("ip", "ip6"):
        chain = sandbox.run_in_host(
            ["/usr/sbin/nft", "list", "chain", family, "docker-bridges", "filter-FORWARD"]
        ).stdout
        assert "type filter hook forward priority filter; policy accept;" in chain
        bridge = sandbox.run_in_host(
            [
                "/usr/sbin/nft",
                "list",
                "chain",
                family,
                "docker-bridges",
                "filter-forward-in__docker0",
            ]
        ).stdout
        assert 'drop comment "UNPUBLISHED PORT DROP"' in bridge


@pytest.mark.parametrize("version", [4, 6])
def test_container_egress(seeded_sandbox: SeededSandbox, version: int) -> None:
    assert seeded_sandbox.sandbox.container_egress("www-nginx", family=version)


@pytest.mark.parametrize("version", [4, 6])
def test_container_to_container(seeded_sandbox: SeededSandbox, version: int) -> None:
    sandbox, scenario = seeded_sandbox.sandbox, seeded_sandbox.scenario
    assert sandbox.container_to_container("admin-app", scenario["www-nginx"], 80, family=version)
    # Docker isolates bridge networks from each other.
    assert not sandbox.container_to_container("admin-app", scenario["db"], 5432, family=version)


def test_probe_is_fast_and_concurrent(seeded_sandbox: SeededSandbox) -> None:
    """About 100 cases, half of them timing out, take one timeout, not fifty."""
    sandbox = seeded_sandbox.sandbox
    cases: list[ProbeCase] = []
    for source in (*topo.WAN_LINK.outside4, *topo.LAN_LINK.outside4):
        for port in (80, 443, 8080, 5432, 9001, 9002, 9003, 9004):
            target = (
                topo.WAN_LINK.host4 if source in topo.WAN_LINK.outside4 else topo.LAN_LINK.host4
            )
            cases.append((source, target, port))
            dropped = seeded_sandbox.scenario["www-nginx"].ipv4
            cases.append((source, dropped, port + 10000))
    started = time.monotonic()
    results = sandbox.probe_auto(cases)
    elapsed = time.monotonic() - started
    assert len(cases) == 96
    assert sum(results) == 6 * 4
    assert elapsed < 5.0


def test_cleanup_spares_a_live_run(seeded_sandbox: SeededSandbox) -> None:
    sandbox = seeded_sandbox.sandbox
    assert sandbox.run_id not in cleanup_leftovers()
    assert sandbox.engine_version()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not pid_alive(int(entry)):
            continue
        if any(text in arg for arg in cmdline(int(entry))):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("engine", list(ENGINES))
def test_cleanup_removes_a_killed_run(
    engine: str, leftovers_removed: list[str], require_engine: Callable[[str], None]
) -> None:
    """A run whose owner died and whose dockerd was SIGKILLed leaves nothing behind."""
    require_engine(engine)
    sandbox = Sandbox(engine)
    sandbox.start()
    try:
        container = sandbox.start_container("orphan", [(80, 80)])
        dockerd = sandbox.dockerd_pid
        assert dockerd is not None
        os.kill(dockerd, 9)
        os.waitpid(dockerd, 0)
        dirs: StateDirs = sandbox.dirs
        dirs.owner_file.write_text("1 0\n")  # as if the test process had died
        assert sandbox.run_id in cleanup_leftovers()
        assert not dirs.run.exists() and not dirs.data.exists()
        assert not [name for name in list_namespaces() if sandbox.run_id in name]
        assert _processes_mentioning(str(dirs.run)) == []
        assert _processes_mentioning(container.id) == []
        with open("/proc/self/mountinfo") as mounts:
            assert sandbox.run_id not in mounts.read()
    finally:
        sandbox.close()
