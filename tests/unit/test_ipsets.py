"""Large source lists become ipsets, changed by swapping a filled copy in."""

from __future__ import annotations

import ipaddress

from dockwall.backends.iptables import ipsets, render
from dockwall.model.packets import Outcome, Packet
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, PortRange, Proto, Verdict
from tests.oracles.iptables_walk import evaluate

MANY = tuple(ipaddress.ip_network(f"198.51.100.{i}") for i in range(10, 30))


def ruleset(sources: tuple[ipaddress.IPv4Network, ...]) -> Ruleset:
    allow = Allow(
        "office", 1, ("office",), "eth0", sources, None, (PortRange(Proto.TCP, 443, 443),)
    )
    return Ruleset(("docker0",), ("br-",), (allow,), Verdict.DROP)


def test_many_sources_become_one_set_match() -> None:
    chains = render.render(Family.V4, ruleset(MANY))
    assert chains["DOCKWALL-IN"][0] == (
        "-i eth0 -p tcp -m set --match-set dw4-office src -m conntrack --ctorigdstport 443 "
        '-m comment --comment "dockwall:office" -j RETURN'
    )
    assert ipsets.wanted(Family.V4, ruleset(MANY)) == {"dw4-office": frozenset(MANY)}
    assert ipsets.wanted(Family.V4, ruleset(MANY[:8])) == {}


def test_steps_create_swap_and_destroy() -> None:
    want = {Family.V4: {"dw4-office": frozenset(MANY)}, Family.V6: {}}
    fresh = ipsets.steps({}, want)
    assert fresh.prepare.startswith("create dw4-office hash:net family inet")
    assert "add dw4-office 198.51.100.29/32" in fresh.prepare
    assert fresh.commit == "" and fresh.abort == "destroy dw4-office\n"
    assert ipsets.steps({"dw4-office": frozenset(MANY)}, want) == ipsets.Steps()
    changed = ipsets.steps({"dw4-office": frozenset(MANY[1:]), "dw4-gone": frozenset()}, want)
    assert changed.prepare.startswith("create dw4-office-n hash:net")
    assert changed.commit.splitlines() == [
        "swap dw4-office-n dw4-office",
        "destroy dw4-office-n",
        "destroy dw4-gone",
    ]
    assert changed.abort == "destroy dw4-office-n\n"
    leftover = ipsets.steps({"dw4-office": frozenset(MANY), "dw4-office-n": frozenset()}, want)
    assert leftover.commit == "destroy dw4-office-n\n"


def test_parse_ipset_save_and_long_names() -> None:
    text = (
        "create dw4-office hash:net family inet hashsize 1024 maxelem 65536\n"
        "add dw4-office 198.51.100.7\nadd dw4-office 203.0.113.0/28\n"
        "create other hash:net family inet\nadd other 192.0.2.1\n"
    )
    assert ipsets.parse(text) == {
        "dw4-office": frozenset(
            {ipaddress.ip_network("198.51.100.7/32"), ipaddress.ip_network("203.0.113.0/28")}
        )
    }
    long = ipsets.name(Family.V6, "a-rule-name-that-is-far-too-long-for-ipset")
    assert len(long + ipsets.NEXT) <= 31 and long.startswith("dw6-")


def test_check_follows_set_membership() -> None:
    chains = render.render(Family.V4, ruleset(MANY))
    sets = {"dw4-office": frozenset(MANY)}

    def fate(source: str) -> Outcome:
        packet = Packet(
            ipaddress.ip_address(source),
            ipaddress.ip_address("192.0.2.2"),
            "eth0",
            "docker0",
            Proto.TCP,
            443,
        )
        return evaluate(chains, packet, sets).outcome

    assert fate("198.51.100.12") is Outcome.ALLOWED
    assert fate("198.51.100.99") is Outcome.DROPPED
