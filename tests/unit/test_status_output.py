"""`dockwall status`, text and JSON, byte for byte as captured (tests/unit/fixtures/status-*).

The command runs for real from the CLI down; only what reads the machine is replaced: Docker's
snapshot (the quarantine scenario's host), the kernel (a fake with counters), the record of
the last apply and Docker's /info. Set UPDATE_GOLDEN=1 to rewrite the captured output after a
deliberate change; review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from dockwall import record
from dockwall.backends.base import DEFAULT_HITS, Hits
from dockwall.cli import app
from dockwall.cli import commands as cli
from dockwall.compile.compiler import compile_policy
from dockwall.model.policy import load_policy
from tests.hostfile import load_host

SCENARIO = Path(__file__).parents[1] / "scenarios" / "quarantine"
FIXTURES = Path(__file__).parent / "fixtures"
POLICY = "/etc/dockwall/policy.yaml"


class FakeKernel:
    def __init__(self, name: str, in_sync: bool) -> None:
        self.name = name
        self.in_sync = in_sync

    def plan(self, ruleset: object) -> SimpleNamespace:
        change = SimpleNamespace(pending=not self.in_sync)
        return SimpleNamespace(pending=change.pending, change=change)

    def hits(self) -> dict[str, Hits]:
        return {"public-web": Hits(12, 3400), "admins": Hits(5, 600), DEFAULT_HITS: Hits(7, 420)}


CASES = {
    "applied-in-sync-iptables": ("iptables", True, 1_700_000_000.5, "iptables"),
    "never-applied-drift-nftables": ("nftables", False, None, "nftables+firewalld"),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    backend, in_sync, applied_at, docker_firewall = CASES[name]
    policy = load_policy(SCENARIO / "policy.yaml")
    host = load_host(SCENARIO / "host.yaml")
    ctx = app.Context(policy, host, compile_policy(policy, host))
    last = None
    if applied_at is not None:
        last = record.Record(POLICY, "ab" * 32, applied_at, ctx.compiled.ruleset, host.names())
    monkeypatch.setattr(app, "prepare", lambda path, docker_host: ctx)
    monkeypatch.setattr(cli, "_kernel", lambda asked, c, h: FakeKernel(backend, in_sync))
    monkeypatch.setattr(record, "load", lambda: last)
    monkeypatch.setattr(app, "docker_firewall", lambda docker_host: docker_firewall)
    return name


@pytest.mark.parametrize("form", ["text", "json"])
def test_status_output_is_as_captured(case: str, form: str) -> None:
    args = ["status", "-p", POLICY] + (["--json"] if form == "json" else [])
    done = CliRunner().invoke(cli.main, args, color=True)
    assert done.exit_code == 0, done.output
    expected = FIXTURES / f"status-{case}.{form}"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(done.output)
    assert done.output == expected.read_text()
