"""Golden scenarios: one folder per story, policy + host in, rendered rules per family out
(iptables: expected.ipv4.rules, expected.ipv6.rules, chains then the ipsets' members;
nftables, both families: expected.nft).

Set UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate change; review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockwall.backends.iptables import ipsets, render
from dockwall.backends.nftables import model as nft_model
from dockwall.backends.nftables import render as nft_render
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
