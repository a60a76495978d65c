"""compile(): which containers a rule selects, which addresses and ports it allows."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dockwall.compile import explain
from dockwall.compile.compiler import closed, compile_policy, selects
from dockwall.model.hoststate import Container, Endpoint
from dockwall.model.packets import Decision, Outcome
from dockwall.model.policy import Selector, parse_policy
from dockwall.model.ruleset import Listener
from dockwall.model.values import Family, Proto
from tests.hostfile import load_host

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def compiled(name: str):  # type: ignore[no-untyped-def]
    policy_text = (SCENARIOS / name / "policy.yaml").read_bytes()
    policy = parse_policy(policy_text, "policy.yaml")
    return compile_policy(policy, load_host(SCENARIOS / name / "host.yaml"))


def test_seed_allows() -> None:
    result = compiled("seed")
    admins, lan, web = result.ruleset.allows
    assert lan.via == "eth1"
    assert admins.destinations is None and admins.via == "eth0"
    assert web.destinations == (net("192.0.2.2/32"), net("2001:db8:d0c::2/128"))
    assert result.ruleset.bridges == ("br-5e3f0c1a2b4d", "docker0")
    assert result.ruleset.bridge_prefixes == ("br-",)
    assert result.warnings == ()


def test_family_narrowing_drops_allows_whose_sources_leave_nothing_there() -> None:
    """An allow whose sources have no address in a family is gone there; one whose
    containers have none there now (nobody-yet selects no container at all) stays, matching
    nothing, so that a container coming changes set elements, not rules."""
    ruleset = compiled("selectors-and-reject").ruleset
    v6 = ruleset.in_family(Family.V6)
    assert [a.rule for a in v6.allows] == ["dns", "dbnet-from-one-host"]
    v4 = ruleset.in_family(Family.V4)
    assert [a.rule for a in v4.allows] == ["metrics", "dns", "dbnet-from-one-host", "nobody-yet"]
    dns = v4.allows[1]
    assert dns.destinations == (net("192.0.2.12/32"), net("192.0.2.13/32"))
    assert v4.allows[3].destinations == () and v4.allows[3].listeners == ()


def test_warnings_for_unmatched_selector_and_unknown_interface() -> None:
    policy = parse_policy(
        b"version: 1\nrules:\n  - {name: a, from: any, via: eth9, to: {container: nope}}\n",
        "p.yaml",
    )
    result = compile_policy(policy, load_host(SCENARIOS / "seed" / "host.yaml"))
    assert result.ruleset.allows[0].destinations == ()
    assert [a.destinations for a in result.ruleset.in_family(Family.V4).allows] == [()]
    assert any("matches no running container" in w for w in result.warnings)
    assert any("'eth9' names no interface" in w for w in result.warnings)


def test_non_bridge_addresses_are_not_destinations() -> None:
    ruleset = compiled("selectors-and-reject").ruleset
    dns = ruleset.allows[1]
    assert net("198.51.100.200/32") not in (dns.destinations or ())


def test_selector_keys_must_all_match() -> None:
    labels = {"a": "b", "com.docker.compose.project": "p", "com.docker.compose.service": "s"}
    c = Container("id", "web-1", labels, (Endpoint("front", None, None),))
    assert selects(Selector(container="web-*"), c)
    assert not selects(Selector(container="WEB-*"), c)
    assert selects(Selector(label=("a", None)), c)
    assert selects(Selector(label=("a", "b"), network="front"), c)
    assert not selects(Selector(label=("a", "c")), c)
    assert not selects(Selector(label=("a", "b"), network="back"), c)
    assert selects(Selector(compose=("p", "s")), c)
    assert selects(Selector(compose=(None, "s")), c)
    assert not selects(Selector(compose=("q", "s")), c)
    assert not selects(Selector(), c)


def test_check_says_container_traffic_and_host_traffic_are_not_governed() -> None:
    host = load_host(SCENARIOS / "seed" / "host.yaml")
    with pytest.raises(explain.NotGoverned, match="is container www-nginx"):
        explain.check_source(host, ipaddress.ip_address("192.0.2.2"))
    with pytest.raises(explain.NotGoverned, match="no container is published on port 22/tcp"):
        explain.targets(host, "198.51.100.1", Family.V4, 22, Proto.TCP)
    found = explain.targets(host, "198.51.100.1", Family.V4, 8080, Proto.TCP)
    assert [(t.container.name, t.container_port, t.published) for t in found] == [
        ("admin-app", 80, True)
    ]
    direct = explain.targets(host, "2001:db8:d0c:1::2", Family.V6, None, Proto.TCP)
    assert [(t.container.name, t.bridge, t.published) for t in direct] == [
        ("db", "br-5e3f0c1a2b4d", False)
    ]


def test_closed_keeps_the_known_host_ports_governed_and_selects_no_container() -> None:
    """Docker away: only rules for every container let anyone in; the host ports last known
    to be published stay governed on the proxy path."""
    policy = parse_policy((SCENARIOS / "seed" / "policy.yaml").read_bytes(), "policy.yaml")
    known = (Listener(Proto.TCP, 5432, ipaddress.ip_network("::/0")),)
    ruleset = closed(policy, known)
    assert ruleset.listeners == known
    assert all(a.destinations in (None, ()) for a in ruleset.allows)
    assert all(not a.listeners for a in ruleset.allows)


@pytest.mark.parametrize(
    ("engine", "firewall", "published", "direct"),
    [
        ("20.10.24", "not reported", "Docker forwards it to admin-app:80/tcp",
         "Docker forwards it to db:5432/tcp (a published container port)"),
        ("29.7.2", "iptables", "Docker forwards it to admin-app:80/tcp",
         "Docker 29.7.2 drops traffic routed straight at container addresses (raw PREROUTING)"),
        ("29.7.2", "nftables",
         "Docker forwards it to admin-app:80/tcp (nftables: ip docker-bridges, chain "
         "filter-forward-in__docker0)",
         "Docker 29.7.2 drops traffic routed straight at container addresses (nftables: "
         "ip6 docker-bridges, chain raw-PREROUTING)"),
    ],
)  # fmt: skip
def test_what_docker_does_next_by_engine_and_firewall(
    engine: str, firewall: str, published: str, direct: str
) -> None:
    """As seen with real packets on each engine (test_sandbox_baseline, test_check_property)."""
    host = load_host(SCENARIOS / "seed" / "host.yaml")
    policy = parse_policy(b"version: 1\nrules:\n  - {name: all, from: any}\n", "p.yaml")
    allowed = Decision(Outcome.ALLOWED, "governed", "", "all")
    found = explain.targets(host, "198.51.100.1", Family.V4, 8080, Proto.TCP)
    found += explain.targets(host, "2001:db8:d0c:1::2", Family.V6, 5432, Proto.TCP)
    said = explain.verdicts(found, [allowed, allowed], policy, engine, firewall)
    assert [v.docker_next for v in said] == [published, direct]
