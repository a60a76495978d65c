"""The nftables backend with real packets, on every engine: the seed scenario with the example
policy, through `table inet dockwall` beside Docker's own rules (iptables-nft's, or Docker 29's
nftables firewall backend's tables `ip docker-bridges` / `ip6 docker-bridges`).

Until the CLI has `--backend`, dockwall's app functions run with NftablesBackend in the
sandbox's host namespace through a tiny runner (RUNNER below). Every test leaves the host as
it found it (table removed, extra containers gone).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockwall_sandbox import Scenario, SeededSandbox
from dockwall_sandbox.matrix import Case, cases, probe
from dockwall_sandbox.pythonpath import child_env
from tests.integration.firewall import mismatches
from tests.integration.test_firewall import (
    ADMINS,
    EXAMPLE,
    LAN,
    WAN_STRANGERS,
    example_policy_allows,
    saved_rules,
)

pytestmark = pytest.mark.integration

RUNNER = """
import json, sys
from dataclasses import replace
from pathlib import Path
from dockwall import proc
from dockwall.cli import app
from dockwall.compile.compiler import compile_policy
from dockwall.backends.base import Kernel
from dockwall.backends.nftables import NftablesBackend

command, kernel = sys.argv[1], Kernel(NftablesBackend())
if command == "update":  # as the daemon: from a host without container argv[4] to this host
    ctx = app.prepare(Path(sys.argv[2]), sys.argv[3])
    others = tuple(c for c in ctx.host.containers if c.name != sys.argv[4])
    before = compile_policy(ctx.policy, replace(ctx.host, containers=others)).ruleset
    after = ctx.compiled.ruleset
    if sys.argv[5] == "remove":
        before, after = after, before
    kernel.apply(kernel.plan(before))
    runs, run = [], proc.run
    proc.run = lambda *a, **k: runs.append(a[0]) or run(*a, **k)
    change = kernel.plan(after, fresh=False)
    kernel.apply(change)
    proc.run = run
    in_sync = not Kernel(NftablesBackend()).plan(after).pending
    print(json.dumps({"payload": change.change.writes.script,
                      "processes": runs, "in_sync": in_sync}))
    sys.exit(0)
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


def nft_dockwall(
    seeded: SeededSandbox, command: str, policy: Path | None = None, *more: str
) -> Any:
    """Run the runner in the host namespace; its JSON answer."""
    sandbox = seeded.sandbox
    argv = [sys.executable, "-c", RUNNER, command]
    if policy is not None:
        argv += [str(policy), sandbox.docker_host, *more]
    env = child_env()
    env["DOCKWALL_STATE"] = str(sandbox.dirs.run / "dockwall-nft-applied.json")
    done = sandbox.run_in_host(argv, check=False, env=env, timeout=120, as_dockwall=True)
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


def dockers_tables(seeded: SeededSandbox) -> dict[str, str]:
    """Docker's own nftables tables (iptables-nft's, or on Docker 29's nftables firewall
    backend its `ip docker-bridges` / `ip6 docker-bridges`), by name, without counters."""
    names = [line for line in nft(seeded, "list", "tables").splitlines() if "dockwall" not in line]
    return {
        name: re.sub(r"packets \d+ bytes \d+", "", nft(seeded, "list", *name.split()))
        for name in names
    }


DOCKERS_TABLES = {"29-nftables": {"table ip docker-bridges", "table ip6 docker-bridges"}}


def test_coexists_with_dockers_own_rules(host: SeededSandbox, tmp_path: Path) -> None:
    """Docker's rules (iptables-nft's, or its nftables backend's tables) are untouched and
    still decide after our accept: its tables stay, and what we allow reaches the containers
    only through Docker's DNAT."""
    docker_rules, docker_tables = saved_rules(host), dockers_tables(host)
    expected = DOCKERS_TABLES.get(host.engine, {"table ip filter", "table ip6 filter"})
    assert expected <= set(docker_tables)
    apply(host, tmp_path / "policy.yaml")
    assert "table inet dockwall" in nft(host, "list", "tables")
    assert dockers_tables(host) == docker_tables
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


LATE_RULES = """  - name: late-public
    from: any
    via: eth0
    to: {label: "public=yes"}
    ports: [8081, 8082]
  - name: late-logged
    from: lan
    via: eth1
    to: {label: "public=yes"}
    log: true
"""


def test_a_container_coming_and_going_is_written_as_a_delta(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    """The daemon's path: a second container joins (then leaves) the class of two rules whose
    sets exist already; only the sets' elements change, written over netlink, and the kernel
    ends up exactly as a full rendering, with packets to match."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE.read_text() + LATE_RULES)
    box = host.sandbox
    box.start_container("late", [(8082, 80)], labels={"public": "yes"})
    late_web = box.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
    direct_open = any(ok for c, ok in baseline.items() if c.path == "direct")

    def expected(joined: bool) -> Callable[[Case], bool]:
        def allowed(case: Case) -> bool:
            if not (case.path == "published" or direct_open):
                return False
            public = joined and case.port == 8081 and case.source in WAN_STRANGERS
            return case.source in ADMINS or case.source in LAN or public

        return allowed

    for how, joined in (("add", True), ("remove", False)):
        done = nft_dockwall(host, "update", policy, "late-web", how)
        assert done["in_sync"] and done["processes"] == [], done  # no nft: over netlink
        lines = done["payload"].splitlines()
        assert all(re.match(r"(add|delete) element inet dockwall \S+ \{ ", x) for x in lines)
        for name in ("dst4_tcp-late-public", "dst4-late-logged", "log4-late-logged"):
            assert f" {name} {{" in done["payload"], done
        observed = probe(box, cases(Scenario({late_web.name: late_web})))
        wrong = mismatches(observed, expected(joined))
        assert not wrong, "\n".join(wrong) + "\n" + dump(host)


GENERATIONS = """
import json, subprocess
from dockwall.daemon import rule_changes
sock = rule_changes.subscribe()
sock.settimeout(5)
asked = [rule_changes.generation()]
for verb in ("add", "delete"):
    subprocess.run(["nft", verb, "table", "inet", "dockwall-gen-test"], check=True, timeout=10)
    asked.append(rule_changes.generation())
told = []
while len(told) < 2:
    told += [x for x in rule_changes.lines(sock.recv(1 << 20)) if x.startswith("# new gen")]
print(json.dumps({"asked": asked, "told": told}))
"""


def test_the_generation_asked_is_the_one_the_change_stream_tells(host: SeededSandbox) -> None:
    """What the daemon's timed check relies on to skip a read (KernelWatch.vouches): the
    kernel's generation, asked over netlink, moves by one per transaction and is the number
    that transaction's end carries in the change stream."""
    argv = [sys.executable, "-c", GENERATIONS]
    done = host.sandbox.run_in_host(argv, check=False, env=child_env(), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)
    first, added, deleted = found["asked"]
    assert (added, deleted) == (first + 1, first + 2)
    assert [t.split(" by ")[0] for t in found["told"]] == [
        f"# new generation {added}",
        f"# new generation {deleted}",
    ]
