"""Policy validation: good files resolve; bad files name the rule, field and line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dockwall.errors import PolicyError
from dockwall.model.policy import Selector, load_policy, parse_policy
from dockwall.model.values import LogRate, PortRange, Proto, Verdict

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text.encode(), "p.yaml")
    return [str(p) for p in caught.value.problems]


def test_example_policy_resolves() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.default is Verdict.DROP
    admins, lan, web = policy.rules
    assert admins.sources is not None and ipaddress.ip_network("2001:db8:100::10/128") in (
        admins.sources
    )
    assert admins.via == "eth0" and admins.targets is None and admins.ports is None
    assert lan.source_names == ("lan",)
    assert web.sources is None
    assert web.targets == (Selector(container="www-nginx"),)
    assert web.ports == (PortRange(Proto.TCP, 80, 80), PortRange(Proto.TCP, 443, 443))
    assert web.line == 15


def test_selectors_and_port_forms() -> None:
    policy = parse_policy(
        b"""version: 1
rules:
  - name: r
    from: [198.51.100.0/24, any]
    to: [{label: "a=b", compose: "proj/svc"}, {network: n, container: "w*"}, {compose: svc}]
    ports: [80, "53/udp", "8000-8100/tcp"]
""",
        "p.yaml",
    )
    rule = policy.rules[0]
    assert rule.sources is None  # "any" in the list wins
    assert rule.targets == (
        Selector(label=("a", "b"), compose=("proj", "svc")),
        Selector(container="w*", network="n"),
        Selector(compose=(None, "svc")),
    )
    assert rule.ports == (
        PortRange(Proto.TCP, 80, 80),
        PortRange(Proto.UDP, 53, 53),
        PortRange(Proto.TCP, 8000, 8100),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\n", "p.yaml:1: version: must be 1"),
        ("version: 1\nrulez: []\n", "p.yaml:2: rulez: unknown key 'rulez'"),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    too: x\n",
            "p.yaml:5: rule 'a': too: unknown key 'too'",
        ),
        (
            "version: 1\nrules:\n  - name: lan\n    from: lna\n",
            "p.yaml:4: rule 'lan': from: unknown group 'lna'",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: [198.51.100.300]\n",
            "p.yaml:4: rule 'a': from: '198.51.100.300' is not an address or CIDR",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: [198.51.100.1/24]\n",
            "has host bits set",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    ports: [80/icmp]\n",
            "p.yaml:5: rule 'a': ports: unknown protocol 'icmp'",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    ports: [70000]\n",
            "p.yaml:5: rule 'a': ports: bad port range 70000-70000",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    ports: [90-80]\n",
            "bad port range 90-80",
        ),
        (
            "version: 1\nrules:\n  - {name: a, from: any}\n  - {name: a, from: any}\n",
            "p.yaml:4: rule 'a': name used by an earlier rule",
        ),
        ("version: 1\nversion: 1\n", "p.yaml:2: key 'version' appears twice"),
        ("version: 1\nrules: [\n", "p.yaml:3: not valid YAML"),
        ("- 1\n", "policy must be a mapping"),
        ("version: 1\ndefault: allow\n", "p.yaml:2: default: Input should be 'drop' or 'reject'"),
        ("version: 1\ngroups: {any: [198.51.100.1]}\n", "group 'any'"),
        ("version: 1\ngroups: {g: [nope]}\n", "p.yaml:2: group 'g': 'nope' is not an address"),
        (
            "version: 1\nrules:\n  - name: a\n    from: any\n    to: {}\n",
            "a selector needs at least one of",
        ),
        ("version: 1\nrules:\n  - name: a\n", "p.yaml:3: rule 'a': from: missing key 'from'"),
    ],
)
def test_errors_name_line_rule_and_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    "field",
    [
        'name: "x\\" -j ACCEPT"',
        'name: "a b"',
        'name: "a\\nb"',
        'via: "eth0 -j ACCEPT"',
        'via: "eth0+"',
        'via: "a-very-long-interface-name"',
    ],
)
def test_text_that_could_inject_rules_is_refused(field: str) -> None:
    base = {"name": "name: ok", "via": "via: eth0"}
    key = field.split(":", 1)[0]
    base[key] = field
    text = f"version: 1\nrules:\n  - {base['name']}\n    from: any\n    {base['via']}\n"
    assert problems(text)


def test_several_problems_are_reported_together() -> None:
    found = problems(
        "version: 1\nrules:\n  - {name: a, from: nope}\n  - {name: a, from: [198.51.100.0/33]}\n"
    )
    assert len(found) == 3, found


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")


def test_drop_logging_forms() -> None:
    plain = parse_policy(b"version: 1\nlog: true\n", "p.yaml")
    assert plain.log and plain.log_rate == LogRate(5, "sec", 10)
    tuned = parse_policy(
        b"version: 1\nlog: {rate: 10/minute, burst: 3}\nrules:\n"
        b"  - {name: a, from: any, log: true}\n",
        "p.yaml",
    )
    assert tuned.log_rate == LogRate(10, "min", 3) and tuned.rules[0].log
    assert not parse_policy(b"version: 1\n", "p.yaml").log


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nlog: {rate: fast}\n", "p.yaml:2: log: bad log rate 'fast'"),
        ("version: 1\nlog: {rate: 5/second, burst: 0}\n", "bad log burst 0"),
        ("version: 1\nlog: {rate: 5/second, often: 1}\n", "unknown key 'often'"),
        ("version: 1\nlog: maybe\n", "p.yaml:2: log"),
    ],
)
def test_drop_logging_errors(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
