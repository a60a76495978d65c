"""Outbound and between rules: a rule's direction is what its from and to name; defaults per
direction; every ambiguous mix is a located error."""

from __future__ import annotations

import ipaddress

import pytest

from dockwall.errors import PolicyError
from dockwall.model.policy import Direction, Selector, parse_policy
from dockwall.model.values import PortRange, Proto, Verdict

net = ipaddress.ip_network

GOOD = b"""version: 1
defaults: {inbound: reject, outbound: drop, between: drop}
groups:
  apis: [203.0.113.0/24, "2001:db8:300::/48"]
rules:
  - name: admins
    from: [198.51.100.10]
    to: '*'
  - name: app-out
    from: {container: app}
    to: [apis, 198.51.100.53]
    ports: [443/tcp, 53/udp]
  - name: app-anywhere
    from: [{container: app}, {label: role=fetcher}]
    to: any
    via: eth0
  - name: web-db
    from: {compose: shop/web}
    to: {container: db}
    ports: 5432/tcp
  - name: web-all
    from: {container: web}
    to: '*'
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text.encode(), "p.yaml")
    return [str(p) for p in caught.value.problems]


def test_directions_and_defaults_resolve() -> None:
    policy = parse_policy(GOOD, "p.yaml")
    assert (policy.default, policy.outbound, policy.between) == (
        Verdict.REJECT,
        Verdict.DROP,
        Verdict.DROP,
    )
    admins, out, anywhere, web_db, web_all = policy.rules
    assert admins.direction is Direction.INBOUND and admins.targets is None
    assert out.direction is Direction.OUTBOUND
    assert out.origins == (Selector(container="app"),)
    assert out.remote == (net("198.51.100.53/32"), net("203.0.113.0/24"), net("2001:db8:300::/48"))
    assert out.remote_names == ("apis", "198.51.100.53")
    assert out.ports == (PortRange(Proto.TCP, 443, 443), PortRange(Proto.UDP, 53, 53))
    assert out.source_names == ("container=app",) and out.sources is None
    assert anywhere.direction is Direction.OUTBOUND and anywhere.remote is None
    assert anywhere.via == "eth0"
    assert anywhere.origins == (Selector(container="app"), Selector(label=("role", "fetcher")))
    assert web_db.direction is Direction.BETWEEN
    assert web_db.origins == (Selector(compose=("shop", "web")),)
    assert web_db.targets == (Selector(container="db"),)
    assert web_all.direction is Direction.BETWEEN and web_all.targets is None


def test_version_1_files_keep_their_meaning() -> None:
    policy = parse_policy(b"version: 1\ndefault: reject\nrules:\n- {name: a, from: any}\n", "p")
    assert (policy.default, policy.outbound, policy.between) == (Verdict.REJECT, None, None)
    assert policy.rules[0].direction is Direction.INBOUND and policy.rules[0].targets is None
    plain = parse_policy(b"version: 1\n", "p")
    assert (plain.default, plain.outbound, plain.between) == (Verdict.DROP, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nrules:\n  - name: a\n    from: [any, {container: x}]\n    to: any\n",
            "p.yaml:4: rule 'a': from: mixes containers and addresses",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n"
            "    to: [{container: y}, 203.0.113.1]\n",
            "p.yaml:5: rule 'a': to: mixes containers and addresses",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n"
            "    to: ['*', {container: y}]\n",
            "p.yaml:5: rule 'a': to: mixes",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    to: [203.0.113.1]\n",
            "p.yaml:5: rule 'a': to: addresses are for rules from containers",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n",
            "p.yaml:4: rule 'a': to: missing: a rule from containers says where to",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n    to: {container: y}\n"
            "    via: eth0\n",
            "p.yaml:6: rule 'a': via: traffic between containers does not cross",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n    to: [apis]\n",
            "p.yaml:5: rule 'a': to: unknown group 'apis'",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {container: x}\n    to: [203.0.113.1/24]\n",
            "has host bits set",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: {contaner: x}\n    to: any\n",
            "p.yaml:4: rule 'a': from.contaner: unknown key 'contaner'",
        ),
        (
            "version: 1\ndefault: drop\ndefaults: {inbound: reject}\n",
            "p.yaml:3: defaults.inbound: the inbound default is given twice",
        ),
        (
            "version: 1\ndefaults: {outbound: allow}\n",
            "p.yaml:2: defaults.outbound: Input should be 'accept', 'drop' or 'reject'",
        ),
        ("version: 1\ndefaults: {inbound: accept}\n", "defaults.inbound: Input should be 'drop'"),
        ("version: 1\ndefaults: {sideways: drop}\n", "unknown key 'sideways'"),
    ],
)
def test_ambiguous_or_bad_rules_are_located_errors(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
