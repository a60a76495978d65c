"""nftables rendering details that golden files don't make obvious."""

from __future__ import annotations

import ipaddress

import pytest

from dockwall.backends.nftables import model, render
from dockwall.errors import UnsafeValueError
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, PortRange, Proto, Verdict

net = ipaddress.ip_network


def ruleset(*allows: Allow, bridges: tuple[str, ...] = ("docker0",)) -> Ruleset:
    return Ruleset(bridges, ("br-",), allows, Verdict.DROP)


def allow(name: str, **kw: object) -> Allow:
    fields: dict[str, object] = {
        "via": None,
        "sources": None,
        "destinations": None,
        "ports": None,
        **kw,
    }
    return Allow(name, 1, (name,), **fields)  # type: ignore[arg-type]


def governed(rs: Ruleset) -> list[str]:
    chain = render.render(rs).chain(model.GOVERNED)
    assert chain is not None
    return [r.text for r in chain.rules]


def sets(rs: Ruleset) -> dict[str, tuple[str, ...]]:
    return {s.name: s.elements for s in render.render(rs).sets}


def test_an_allow_naming_no_address_is_one_rule_per_family_sharing_its_sets() -> None:
    """Per family, so that its counters tell IPv4 from IPv6 (metrics); the port sets are
    one for both."""
    ports = (PortRange(Proto.TCP, 80, 80), PortRange(Proto.UDP, 53, 53))
    rs = ruleset(allow("web", via="eth0", ports=ports))
    tail = 'ct original proto-dst @port_{0}-web counter accept comment "dockwall:web"'
    assert governed(rs)[:4] == [
        f'meta nfproto {nfproto} iifname "eth0" meta l4proto {proto} ' + tail.format(proto)
        for nfproto in ("ipv4", "ipv6")
        for proto in ("tcp", "udp")
    ]
    rules = render.render(rs).chain(render.GOVERNED)
    assert rules is not None
    assert [r.family for r in rules.rules[:4]] == [Family.V4, Family.V4, Family.V6, Family.V6]
    # (listen4/listen6: the host ports of the proxy path; none are published here)
    assert sets(rs) == {
        "port_tcp-web": ("80",),
        "port_udp-web": ("53",),
        "listen4": (),
        "listen6": (),
    }


def test_overlapping_sources_and_ports_are_merged_so_interval_sets_accept_them() -> None:
    sources = (net("203.0.113.0/28"), net("203.0.113.5/32"), net("2001:db8::1/128"))
    ports = (
        PortRange(Proto.TCP, 80, 80),
        PortRange(Proto.TCP, 81, 90),
        PortRange(Proto.TCP, 85, 86),
    )
    found = sets(
        ruleset(allow("a", sources=sources, destinations=(net("192.0.2.2/32"),), ports=ports))
    )
    assert found["src4-a"] == ("203.0.113.0/28",)
    assert found["dst4_tcp-a"] == ("192.0.2.2 . 80-90",)
    # no IPv6 container now: the IPv6 rule stays, matching nothing until one comes
    assert found["src6-a"] == ("2001:db8::1",) and found["dst6_tcp-a"] == ()


def test_set_names_of_two_rules_never_collide() -> None:
    dst = (net("192.0.2.2/32"),)
    tcp = (PortRange(Proto.TCP, 80, 80),)
    names = sets(ruleset(allow("tcp-x", destinations=dst), allow("x", destinations=dst, ports=tcp)))
    assert set(names) == {
        "dst4-tcp-x", "dst6-tcp-x", "lsn4-tcp-x", "lsn6-tcp-x",  # rule tcp-x
        "dst4_tcp-x", "dst6_tcp-x", "lsn4-x", "lsn6-x",  # rule x
        "listen4", "listen6",
    }  # fmt: skip


def test_a_bridge_a_wildcard_covers_is_left_to_the_wildcard() -> None:
    rs = ruleset(bridges=("docker0", "br-5e3f0c1a2b4d", "custom0"))
    base = render.render(rs).chain(model.BASE)
    assert base is not None
    assert base.rules[2].text == 'iifname { "br-*", "custom0", "docker0" } accept'  # after replies


@pytest.mark.parametrize(
    "bad",
    [
        allow('x" drop; #'),
        allow("ok", via='eth0" accept'),
    ],
)
def test_names_that_could_inject_rule_text_are_refused(bad: Allow) -> None:
    with pytest.raises(UnsafeValueError):
        render.render(ruleset(bad))


def test_reject_and_default_logging() -> None:
    rs = Ruleset(("docker0",), ("br-",), (), Verdict.REJECT, log_default=True)
    assert governed(rs) == [
        'limit rate 5/second burst 10 packets log prefix "dockwall:default "',
        "counter reject with icmpx port-unreachable",
    ]


def test_drops_are_logged_under_the_first_logging_rule_naming_the_container() -> None:
    dst = (net("192.0.2.2/32"), net("2001:db8:d0c::2/128"))
    first = allow("first", destinations=dst, ports=(PortRange(Proto.TCP, 80, 80),), log=True)
    second = allow("second", destinations=dst, log=True)
    table = render.render(ruleset(first, second))
    chains = {"forward", "governed", "log-first", "log-second", "input", "proxy"}
    assert {c.name for c in table.chains} == chains
    assert governed(ruleset(first, second))[-5:] == [
        "ip daddr @log4-first goto log-first",
        "ip6 daddr @log6-first goto log-first",
        "ip daddr @log4-second goto log-second",  # (empty: first names them first)
        "ip6 daddr @log6-second goto log-second",
        "counter drop",
    ]
    assert {s.name: s.elements for s in table.sets}["log4-second"] == ()


def test_the_transaction_replaces_the_table_whole() -> None:
    text = model.transaction(render.render(ruleset()))
    assert text.splitlines()[:3] == [
        "table inet dockwall {}",
        "delete table inet dockwall",
        "table inet dockwall {",
    ]
    assert "type filter hook forward priority -10; policy accept;" in text
