"""The nftables backend with real packets, on both engines: the seed scenario with the example
policy, through `table inet dockwall` beside Docker's own (iptables-nft) rules.

Until the CLI has `--backend`, dockwall's app functions run with NftablesBackend in the
sandbox's host namespace through a tiny runner (RUNNER below). Every test leaves the host as
it found it (table removed, extra containers gone).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockwall_sandbox import Scenario, SeededSandbox
from dockwall_sandbox.matrix import Case, cases, probe
from tests.integration.firewall import mismatches
from tests.integration.test_firewall import ADMINS, EXAMPLE, LAN, example_policy_allows, saved_rules

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[2] / "src")
RUNNER = """
import json, sys
from pathlib import Path
from dockwall import app
from dockwall.backends.nftables import NftablesBackend

command, kernel = sys.argv[1], NftablesBackend()
if command == "remove":
    change = app.remove(kernel)
elif command == "hits":
    print(json.dumps({k: [h.packets, h.bytes] for k, h in kernel.hits().items()}))
    sys.exit(0)
else:
    ctx = app.prepare(Path(sys.argv[2]), sys.argv[3])
    change = app.apply(ctx, kernel) if command == "apply" else app.plan(ctx, kernel)
print(json.dumps({"pending": change.pending,
                  "families": {f.family.value: f.pending for f in change.families}}))
"""


def nft_dockwall(seeded: SeededSandbox, command: str, policy: Path | None = None) -> Any:
    """Run the runner in the host namespace; its JSON answer."""
    sandbox = seeded.sandbox
    argv = [sys.executable, "-c", RUNNER, command]
    if policy is not None:
        argv += [str(policy), sandbox.docker_host]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    env["DOCKWALL_STATE"] = str(sandbox.dirs.run / "dockwall-nft-applied.json")
    done = sandbox.run_in_host(argv, check=False, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def nft(seeded: SeededSandbox, *args: str, check: bool = True) -> str:
    return seeded.sandbox.run_in_host(["nft", *args], check=check).stdout


def our_table(seeded: SeededSandbox) -> str:
    """dockwall's table with rule handles (a rewrite changes them) but no counters."""
    return nft(seeded, "-a", "-s", "list", "table", "inet", "dockwall")


def dump(seeded: SeededSandbox) -> str:
    return nft(seeded, "list", "ruleset", check=False)


@pytest.fixture(scope="module")
def baseline(seeded_sandbox: SeededSandbox) -> dict[Case, bool]:
    """What plain Docker lets through, before any dockwall rule."""
    nft_dockwall(seeded_sandbox, "remove")
    observed = probe(seeded_sandbox.sandbox, cases(seeded_sandbox.scenario))
    published = [c for c in observed if c.path == "published"]
    assert published and all(observed[c] for c in published), "harness: Docker not publishing"
    return observed


@pytest.fixture
def host(
    seeded_sandbox: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> Iterator[SeededSandbox]:
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    yield seeded_sandbox
    nft_dockwall(seeded_sandbox, "remove")
    for name in ("late", "late-web"):
        seeded_sandbox.sandbox.docker("rm", "-f", name, check=False)


def apply(seeded: SeededSandbox, policy: Path) -> dict[str, Any]:
    answer: dict[str, Any] = nft_dockwall(seeded, "apply", policy)
    return answer


def test_every_source_port_family_and_path_matches_the_oracle(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    assert apply(host, tmp_path / "policy.yaml")["pending"]
    observed = probe(host.sandbox, list(baseline))
    wrong = mismatches(observed, lambda c: baseline[c] and example_policy_allows(c))
    assert not wrong, "\n".join(wrong) + "\n" + dump(host)
    for version in (4, 6):
        family = [c for c in observed if c.source.version == version]
        assert any(observed[c] for c in family) and not all(observed[c] for c in family)
    hits = nft_dockwall(host, "hits")
    assert hits["admins"][0] > 0 and hits["public-web"][0] > 0 and hits["(default)"][0] > 0


def test_apply_twice_writes_nothing(host: SeededSandbox, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    first = apply(host, policy)
    assert first["pending"] and first["families"] == {"ipv4": True, "ipv6": True}
    before = our_table(host)
    assert apply(host, policy) == {"pending": False, "families": {"ipv4": False, "ipv6": False}}
    assert nft_dockwall(host, "plan", policy)["pending"] is False
    assert our_table(host) == before  # same handles: not rewritten


def test_drift_is_seen_and_repaired(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    apply(host, policy)
    nft(host, "flush", "chain", "inet", "dockwall", "governed")
    assert nft_dockwall(host, "plan", policy)["pending"] is True
    nft(host, "flush", "set", "inet", "dockwall", "src6-admins")
    assert apply(host, policy)["pending"] is True
    assert nft_dockwall(host, "plan", policy)["pending"] is False
    nft(host, "delete", "table", "inet", "dockwall")
    assert apply(host, policy)["pending"] is True
    observed = probe(host.sandbox, list(baseline))
    wrong = mismatches(observed, lambda c: baseline[c] and example_policy_allows(c))
    assert not wrong, "\n".join(wrong) + "\n" + dump(host)


def test_remove_gives_back_plain_docker(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    docker_rules = saved_rules(host)
    apply(host, tmp_path / "policy.yaml")
    assert "table inet dockwall" in nft(host, "list", "tables")
    assert nft_dockwall(host, "remove")["pending"] is True
    assert "dockwall" not in nft(host, "list", "tables")
    assert nft_dockwall(host, "remove")["pending"] is False
    assert saved_rules(host) == docker_rules
    assert probe(host.sandbox, list(baseline)) == baseline


def test_coexists_with_dockers_own_rules(host: SeededSandbox, tmp_path: Path) -> None:
    """Docker's iptables(-nft) rules are untouched and still decide after our accept: its
    tables stay, and what we allow reaches the containers only through Docker's DNAT."""
    docker_rules = saved_rules(host)
    apply(host, tmp_path / "policy.yaml")
    tables = nft(host, "list", "tables")
    assert "table inet dockwall" in tables and "table ip filter" in tables
    assert "table ip6 filter" in tables
    assert saved_rules(host) == docker_rules
    assert "priority filter - 10" in our_table(host)


def test_egress_and_container_to_container_still_work(host: SeededSandbox, tmp_path: Path) -> None:
    apply(host, tmp_path / "policy.yaml")
    box, www = host.sandbox, host.scenario["www-nginx"]
    assert box.container_egress("admin-app", family=4)
    assert box.container_egress("db", family=6)
    assert box.container_to_container("admin-app", www, 80, family=4)
    assert box.container_to_container("admin-app", www, 80, family=6)


def test_container_started_after_apply_is_closed_except_to_star_rules(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    apply(host, tmp_path / "policy.yaml")
    late = host.sandbox.start_container("late", [(9000, 80)])
    observed = probe(host.sandbox, cases(Scenario({late.name: late})))
    direct_open = any(ok for c, ok in baseline.items() if c.path == "direct")

    def expected(case: Case) -> bool:
        engine_lets_through = case.path == "published" or direct_open
        return engine_lets_through and (case.source in ADMINS or case.source in LAN)

    wrong = mismatches(observed, expected)
    assert not wrong, "\n".join(wrong) + "\n" + dump(host)
    assert any(observed.values())
