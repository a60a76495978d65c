"""check from a container: the connections it opens, judged by the core (both directions),
on the outbound-between scenario."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from dockwall.backends.nftables import lines, render
from dockwall.cli import report
from dockwall.compile import flows, policydiff
from dockwall.compile.compiler import compile_policy
from dockwall.compile.exposure import egress
from dockwall.errors import DockwallError
from dockwall.model.policy import Direction, load_policy
from dockwall.model.values import Proto
from tests.hostfile import load_host

SCENARIO = Path(__file__).parent.parent / "scenarios" / "outbound-between"


def judged(source: str, dest: str, port: int | None, proto: Proto = Proto.TCP) -> list[str]:
    host = load_host(SCENARIO / "host.yaml")
    policy = load_policy(SCENARIO / "policy.yaml")
    ruleset = compile_policy(policy, host).ruleset
    container = flows.source_container(host, source)
    assert container is not None
    found = flows.flows(host, container, dest, port, proto, route=lambda a: "eth0")
    table = render.render(ruleset)
    decisions = [lines.decision(ruleset, table, f.packet()) for f in found]
    return [flows.text(v) for v in flows.verdicts(found, decisions, policy)]


def test_outbound_by_rule_and_by_default() -> None:
    assert judged("www-nginx", "203.0.113.7", 443) == [
        f"allowed by rule web-api ({SCENARIO / 'policy.yaml'}:12); Docker's own rules decide next"
    ]
    assert judged("www-nginx", "203.0.113.7", 80) == [
        "dropped by the outbound default: no rule allows it"
    ]
    assert judged("admin-app", "198.51.100.53", 53, Proto.UDP) == [
        "dropped by the outbound default: no rule allows it"
    ]
    assert judged("192.0.2.2", "2001:db8:300::7", 443)[0].startswith("allowed by rule web-api")


def test_between_by_rule_and_by_default_in_both_families() -> None:
    allowed = judged("www-nginx", "db", 5432)
    assert len(allowed) == 2 and all(t.startswith("allowed by rule web-db") for t in allowed)
    assert (
        judged("db", "www-nginx", 80) == ["rejected by the between default: no rule allows it"] * 2
    )
    assert judged("www-nginx", "192.0.2.130", None) == [allowed[0]]  # db's published port


def test_flows_name_their_direction_and_path() -> None:
    host = load_host(SCENARIO / "host.yaml")
    web = flows.source_container(host, "www-nginx")
    assert web is not None
    (out,) = flows.flows(host, web, "203.0.113.7", 443, Proto.TCP, route=lambda a: "eth1")
    assert (out.direction, out.in_bridge, out.out_interface) == (
        Direction.OUTBOUND, "docker0", "eth1"
    )  # fmt: skip
    to_db = flows.flows(host, web, "db", 5432, Proto.TCP, route=lambda a: "eth0")
    assert {(f.direction, f.out_interface) for f in to_db} == {
        (Direction.BETWEEN, "br-5e3f0c1a2b4d")
    }
    assert [f.destination for f in to_db] == [
        ipaddress.ip_address("192.0.2.130"), ipaddress.ip_address("2001:db8:d0c:1::2")
    ]  # fmt: skip


def test_outbound_needs_a_port_and_an_address_of_the_family() -> None:
    host = load_host(SCENARIO / "host.yaml")
    web = flows.source_container(host, "www-nginx")
    assert web is not None
    with pytest.raises(DockwallError, match="needs --port"):
        flows.flows(host, web, "203.0.113.7", None, Proto.TCP, route=lambda a: "eth0")
    with pytest.raises(DockwallError, match="no running container named"):
        flows.flows(host, web, "nope", 80, Proto.TCP, route=lambda a: "eth0")
    assert flows.source_container(host, "203.0.113.7") is None


def test_status_lists_what_each_container_may_open() -> None:
    host = load_host(SCENARIO / "host.yaml")
    ruleset = compile_policy(load_policy(SCENARIO / "policy.yaml"), host).ruleset
    rows = report.egress_rows(egress(ruleset, host), host, {})
    assert rows[1:] == [
        ["admin-app", "nothing", "nothing"],
        ["db", "nothing", "nothing"],
        [
            "www-nginx",
            "web-api (203.0.113.0/24, 2001:db8:300::/48 on 443/tcp); "
            "web-dns (198.51.100.53/32 via eth0 on 53/tcp, 53/udp)",
            "web-db (db on 5432/tcp)",
        ],
    ]
    inbound_only = compile_policy(load_policy(SCENARIO.parent / "seed" / "policy.yaml"), host)
    assert egress(inbound_only.ruleset, host) == ()  # nothing to say: status as before


def test_plan_says_what_changes_for_outbound_and_between_in_policy_terms() -> None:
    host = load_host(SCENARIO / "host.yaml")
    policy = load_policy(SCENARIO / "policy.yaml")
    new = compile_policy(policy, host).ruleset
    seed = compile_policy(load_policy(SCENARIO.parent / "seed" / "policy.yaml"), host).ruleset
    said = policydiff.rule_changes(seed, new)
    assert "outbound default: accept -> drop" in said
    assert "between default: accept -> reject" in said
    assert {"outbound rule web-api added", "between rule web-db added"} <= set(said)
    gone = replace(host, containers=tuple(c for c in host.containers if c.name != "www-nginx"))
    names = {"192.0.2.2": "www-nginx", "2001:db8:d0c::2": "www-nginx"}
    said = policydiff.rule_changes(new, compile_policy(policy, gone).ruleset, names)
    assert (
        "outbound rule web-api updated (-www-nginx 192.0.2.2, -www-nginx 2001:db8:d0c::2)"
    ) in said
    assert "between rule web-db updated (-www-nginx 192.0.2.2, -www-nginx 2001:db8:d0c::2)" in said
