"""The nftables backend's packet follower agrees with the iptables one on every scenario."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest

from dockwall.backends.iptables import ipsets
from dockwall.backends.iptables import render as ipt_render
from dockwall.backends.nftables import lines, render
from dockwall.compile.compiler import compile_policy
from dockwall.model.packets import Outcome, Packet, Route
from dockwall.model.policy import load_policy
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Family, IPAddress, Proto
from tests.hostfile import load_host
from tests.oracles import iptables_walk as ipt_evaluate

SCENARIOS = Path(__file__).parent.parent / "scenarios"
ip = ipaddress.ip_address


def scenario(name: str) -> Ruleset:
    folder = SCENARIOS / name
    return compile_policy(
        load_policy(folder / "policy.yaml"), load_host(folder / "host.yaml")
    ).ruleset


def packets(family: Family) -> list[Packet]:
    if family is Family.V4:
        sources = ["198.51.100.10", "198.51.100.99", "203.0.113.5", "203.0.113.7", "203.0.113.99"]
        dests = ["192.0.2.2", "192.0.2.3", "192.0.2.10", "192.0.2.12", "192.0.2.130"]
    else:
        sources = ["2001:db8:100::10", "2001:db8:100::99", "2001:db8:200::5", "2001:db8:200::7"]
        dests = ["2001:db8:d0c::2", "2001:db8:d0c::12", "2001:db8:d0c:1::2"]
    ifaces = [("eth0", "docker0"), ("eth1", "br-5e3f0c1a2b4d"), ("eth0", "br-new"),
              ("docker0", "eth0"), ("docker0", "br-5e3f0c1a2b4d")]  # fmt: skip
    found = []
    for src, dst, (i, o), proto, port in itertools.product(
        sources, dests, ifaces, Proto, (53, 80, 443, 5432, 9105)
    ):
        source: IPAddress = ip(src)
        found.append(Packet(source, ip(dst), i, o, proto, port))
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.iterdir()))
@pytest.mark.parametrize("family", list(Family))
def test_same_verdict_and_rule_as_the_iptables_evaluator(name: str, family: Family) -> None:
    rs = scenario(name)
    chains = ipt_render.render(family, rs.in_family(family))
    sets = ipsets.wanted(family, rs.in_family(family))
    table = render.render(rs)
    for packet in packets(family):
        want = ipt_evaluate.evaluate(chains, packet, sets)
        got = lines.decision(rs, table, packet)
        assert (got.outcome, got.policy_rule) == (want.outcome, want.policy_rule), packet


def test_the_deciding_line_is_the_rendered_rule() -> None:
    rs = scenario("drop-logging")
    table = render.render(rs)
    www = Packet(ip("198.51.100.99"), ip("192.0.2.2"), "eth0", "docker0", Proto.TCP, 80)
    allowed = lines.decision(rs, table, www)
    assert allowed.outcome is Outcome.ALLOWED and allowed.policy_rule == "public-web"
    assert "@dst4_tcp-public-web" in allowed.rule
    dropped = lines.decision(
        rs, table, Packet(www.source, www.destination, "eth0", "docker0", Proto.TCP, 443)
    )
    assert (dropped.outcome, dropped.chain, dropped.rule) == (
        Outcome.DROPPED,
        "log-public-web",
        "counter drop",
    )


def test_a_quarantined_containers_host_port_is_dropped_on_the_proxy_path() -> None:
    """odd-app (on a quarantined network and on wallnet) publishes 9092: an admin, whom a rule
    for every container lets in, is turned away there by the quarantine, before any rule."""
    rs = scenario("quarantine")
    table = render.render(rs)
    for admin, host in (("198.51.100.10", "198.51.100.1"), ("2001:db8:100::10", "2001:db8:100::1")):
        source: IPAddress = ip(admin)
        packet = Packet(source, ip(host), "eth0", "", Proto.TCP, 9092, Route.PROXY)
        got = lines.decision(rs, table, packet)
        digit = "4" if source.version == 4 else "6"
        assert (got.outcome, got.chain) == (Outcome.DROPPED, "input"), got
        assert got.rule.endswith(f"@qlisten{digit} counter drop") and got.policy_rule is None
        family = Family.of(source)
        narrowed = rs.in_family(family)
        chains = ipt_render.render(family, narrowed)
        walk = ipt_evaluate.evaluate(chains, packet, ipsets.wanted(family, narrowed))
        assert (walk.outcome, walk.chain) == (Outcome.DROPPED, "DOCKWALL-DEFAULT"), walk
        allowed = Packet(source, ip(host), "eth0", "", Proto.TCP, 9091, Route.PROXY)
        assert lines.decision(rs, table, allowed).policy_rule == "admins"
