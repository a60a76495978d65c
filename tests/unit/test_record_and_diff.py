"""The record of what was applied, and plans told in policy terms."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwall import record
from dockwall.compile import policydiff
from dockwall.compile.compiler import compile_policy
from dockwall.model.policy import parse_policy
from tests.hostfile import load_host

SCENARIOS = Path(__file__).parents[1] / "scenarios"
SEED = (SCENARIOS / "seed" / "policy.yaml").read_bytes()


def compiled(text: bytes):  # type: ignore[no-untyped-def]
    host = load_host(SCENARIOS / "seed" / "host.yaml")
    return compile_policy(parse_policy(text, "policy.yaml"), host).ruleset, host


def test_record_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWALL_STATE", str(tmp_path / "state" / "applied.json"))
    assert record.load() is None
    ruleset, host = compiled(SEED.replace(b"version: 1", b"version: 1\nlog: true"))
    record.save("policy.yaml", "abc", ruleset, host)
    back = record.load()
    assert back is not None and back.ruleset == ruleset and back.sha256 == "abc"
    assert back.names["192.0.2.2"] == "www-nginx"
    record.forget()
    assert record.load() is None


def test_record_round_trips_outbound_and_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without them in the record, plan would compare the kernel with a ruleset that has no
    outbound or between rules, and never speak in policy terms once they are in use."""
    monkeypatch.setenv("DOCKWALL_STATE", str(tmp_path / "state" / "applied.json"))
    folder = SCENARIOS / "outbound-between"
    host = load_host(folder / "host.yaml")
    ruleset = compile_policy(parse_policy((folder / "policy.yaml").read_bytes(), "p"), host).ruleset
    assert ruleset.outbound and ruleset.between and ruleset.between_default is not None
    record.save("policy.yaml", "abc", ruleset, host)
    back = record.load()
    assert back is not None and back.ruleset == ruleset


def test_plan_in_policy_terms() -> None:
    old, host = compiled(SEED)
    new, _ = compiled(
        SEED.replace(b"[80/tcp, 443/tcp]", b"[80/tcp]").replace(
            b"  - name: lan\n    from: lan\n    via: eth1\n", b""
        )
    )
    names = host.names()
    assert policydiff.rule_changes(old, new, names) == [
        "rule public-web updated (ports 80/tcp,443/tcp -> 80/tcp)",
        "rule lan removed",
    ]
    reach = policydiff.reach_changes(old, new, host)
    assert (
        "www-nginx 443/tcp: no longer reachable by lan (lan via eth1), "
        "public-web (anyone via eth0)" in reach
    )
    assert "db 5432/tcp: no longer reachable by lan (lan via eth1)" in reach
    assert not any("becomes reachable" in line for line in reach)


def test_rule_gaining_a_container_names_it() -> None:
    old, host = compiled(SEED)
    without_ports = SEED.replace(b"    ports: [80/tcp, 443/tcp]\n", b"")
    new, _ = compiled(without_ports.replace(b"{container: www-nginx}", b'{container: "*"}'))
    said = policydiff.rule_changes(old, new, host.names())
    assert said[0].startswith("rule public-web updated (+admin-app 192.0.2.3")
    assert any(
        "admin-app 8080/tcp: becomes reachable by public-web" in line
        for line in policydiff.reach_changes(old, new, host)
    )
