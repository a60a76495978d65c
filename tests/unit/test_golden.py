"""Golden scenarios: one folder per story, policy + host in, rendered rules per family out
(iptables: expected.ipv4.rules, expected.ipv6.rules, chains then the ipsets' members;
nftables, both families: expected.nft), and what each backend's diff writes (expected.plan).

Set UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate change; review the diff.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from dockwall.backends.iptables import ipsets, render, saved
from dockwall.backends.iptables.backend import IptablesBackend
from dockwall.backends.iptables.backend import State as IptState
from dockwall.backends.nftables import NftablesBackend
from dockwall.backends.nftables import model as nft_model
from dockwall.backends.nftables import render as nft_render
from dockwall.backends.nftables.backend import State as NftState
from dockwall.compile.compiler import compile_policy
from dockwall.model.policy import load_policy
from dockwall.model.values import Family
from tests.hostfile import load_host

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def rendered(scenario: Path, family: Family) -> str:
    policy = load_policy(scenario / "policy.yaml")
    compiled = compile_policy(policy, load_host(scenario / "host.yaml"))
    narrowed = compiled.ruleset.in_family(family)
    chains = render.render(family, narrowed)
    lines = [f"-A {chain} {spec}" for chain, specs in chains.items() for spec in specs]
    sets = ipsets.wanted(family, narrowed)
    lines += [f"# ipset {name}: {' '.join(sorted(map(str, sets[name])))}" for name in sorted(sets)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("family", list(Family))
@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.iterdir()))
def test_rendered_rules_match_golden(scenario: str, family: Family) -> None:
    folder = SCENARIOS / scenario
    expected = folder / f"expected.{family.value}.rules"
    actual = rendered(folder, family)
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(actual)
    assert actual == expected.read_text()


def rendered_nft(scenario: Path) -> str:
    policy = load_policy(scenario / "policy.yaml")
    compiled = compile_policy(policy, load_host(scenario / "host.yaml"))
    return nft_model.text(nft_render.render(compiled.ruleset))


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.iterdir()))
def test_rendered_nftables_table_matches_golden(scenario: str) -> None:
    folder = SCENARIOS / scenario
    expected = folder / "expected.nft"
    actual = rendered_nft(folder)
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(actual)
    assert actual == expected.read_text()


# Docker's filter table before dockwall, as iptables-save prints it (both families alike)
DOCKER_ONLY = (
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    ":DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
)


def planned(scenario: Path) -> str:
    """What each backend's diff writes: the first apply, then, from the state that apply
    left (trusted, as `dockwall run` holds it), the first container of the host stopping."""
    policy = load_policy(scenario / "policy.yaml")
    host = load_host(scenario / "host.yaml")
    smaller = replace(host, containers=host.containers[1:])
    before = compile_policy(policy, host).ruleset
    after = compile_policy(policy, smaller).ruleset
    out = []
    nft = NftablesBackend()
    first = nft.render(before)
    applied = nft.diff(first, NftState(None))
    assert applied.after is not None
    stopped = nft.diff(nft.render(after, first), applied.after)
    out.append(f"# nftables, first apply: {applied.families[0].hook}")
    out.append(
        f"# nftables, {host.containers[0].name if host.containers else '-'} stops: "
        f"{stopped.families[0].hook or 'nothing to write'} (delta: {stopped.change.delta})"
    )
    out.append(stopped.change.writes.script)
    ipt = IptablesBackend()
    state = IptState({f: saved.parse(DOCKER_ONLY) for f in Family}, {}, True)
    applied_i = ipt.diff(ipt.render(before), state)
    assert applied_i.after is not None
    stopped_i = ipt.diff(ipt.render(after), applied_i.after)
    out.append(f"# iptables, the same stop (delta: {stopped_i.change.delta})")
    out.append(f"# ipset: {stopped_i.change.writes.sets.prepare.strip() or '-'}")
    out += [f"# {r.family.value}\n{r.payload}" for r in stopped_i.change.writes.restores]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.iterdir()))
def test_planned_transactions_match_golden(scenario: str) -> None:
    folder = SCENARIOS / scenario
    expected = folder / "expected.plan"
    actual = planned(folder)
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(actual)
    assert actual == expected.read_text()
