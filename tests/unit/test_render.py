"""Rendering details that golden files don't make obvious."""

from __future__ import annotations

import ipaddress

from dockwall.backends.iptables import render
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, Verdict


def test_chain_depth_stays_fixed_however_many_rules() -> None:
    """nftables refuses chain paths deeper than about 15 (gotos count): stay far below."""
    allows = tuple(
        Allow(
            f"r{i}",
            i,
            (f"g{i}",),
            "eth0",
            (ipaddress.ip_network(f"198.51.100.{i}"),),
            (ipaddress.ip_network(f"192.0.2.{i % 50}"),) if i % 3 else None,
            None,
        )
        for i in range(200)
    )
    chains = render.render(Family.V4, Ruleset(("docker0",), ("br-",), allows, Verdict.DROP))

    def depth(chain: str) -> int:
        targets = {s.split()[-1] for s in chains[chain] if s.split()[-2] in {"-j", "-g"}}
        return 1 + max((depth(t) for t in targets if t in chains), default=0)

    assert depth("DOCKWALL") == 4
