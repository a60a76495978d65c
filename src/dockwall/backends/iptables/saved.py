"""Parse iptables-save output: dockwall's chains, its hook jumps, and counters. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dockwall.backends.base import DEFAULT_HITS, Hits
from dockwall.backends.iptables.render import ENTRY, INPUT_ENTRY, PREFIX, PROXY

HOOK_CHAINS = ("DOCKER-USER", "FORWARD", "INPUT")
FORWARD_HOOKS = ("DOCKER-USER", "FORWARD")
JUMP = f"-j {ENTRY}"
JUMPS = {"DOCKER-USER": JUMP, "FORWARD": JUMP, "INPUT": f"-j {INPUT_ENTRY}"}
_COUNTED = re.compile(r"\[(\d+):(\d+)\] (.*)")
_VERDICT = re.compile(r"-j (DROP|REJECT)\b")
_RULE_COMMENT = re.compile(r'--comment "dockwall:([^"]+)" -j RETURN$')


@dataclass
class Saved:
    """The filter table as iptables-save showed it, reduced to what dockwall cares about."""

    chains: dict[str, list[str]] = field(default_factory=dict)  # dockwall's chains
    counters: dict[str, list[Hits]] = field(default_factory=dict)  # per rule of those
    hooks: dict[str, list[str]] = field(default_factory=dict)  # rules of DOCKER-USER, FORWARD
    existing: set[str] = field(default_factory=set)  # every chain in the table

    def jump_positions(self, chain: str) -> list[int]:
        """0-based positions of dockwall's jump in a hook chain (`-j DOCKWALL` in FORWARD
        and DOCKER-USER, `-j DOCKWALL-INPUT` in INPUT)."""
        return [i for i, rule in enumerate(self.hooks.get(chain, [])) if rule == JUMPS[chain]]


def is_ours(chain: str) -> bool:
    return chain == ENTRY or chain.startswith(PREFIX + "-")


def parse(text: str) -> Saved:
    saved = Saved()
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif table != "filter":
            continue
        elif line.startswith(":"):
            _declare(saved, line[1:].split(" ", 1)[0])
        else:
            _rule(saved, line)
    return saved


def _declare(saved: Saved, chain: str) -> None:
    saved.existing.add(chain)
    if is_ours(chain):
        saved.chains.setdefault(chain, [])
        saved.counters.setdefault(chain, [])
    elif chain in HOOK_CHAINS:
        saved.hooks.setdefault(chain, [])


def _rule(saved: Saved, line: str) -> None:
    counter = Hits(0, 0)
    counted = _COUNTED.fullmatch(line)
    if counted:
        counter = Hits(int(counted[1]), int(counted[2]))
        line = counted[3]
    if not line.startswith("-A "):
        return
    chain, _, spec = line[3:].partition(" ")
    if is_ours(chain):
        saved.chains.setdefault(chain, []).append(spec)
        saved.counters.setdefault(chain, []).append(counter)
    elif chain in HOOK_CHAINS:
        saved.hooks.setdefault(chain, []).append(spec)


def hits(saved: Saved) -> dict[str, Hits]:
    """Sum the counters of each rule's RETURN lines (found by comment) and of the default.
    An allowed packet passes dockwall's chains once per jump to them (DOCKER-USER and
    FORWARD), so allow counters are divided by the number of jumps; a drop ends the first.
    The proxy path (INPUT) has one jump."""
    passes = max(1, sum(len(saved.jump_positions(c)) for c in FORWARD_HOOKS))
    totals: dict[str, Hits] = {}
    for chain, specs in saved.chains.items():
        for spec, hit in zip(specs, saved.counters.get(chain, []), strict=False):
            found = _RULE_COMMENT.search(spec)
            key = found[1] if found else (DEFAULT_HITS if _VERDICT.search(spec) else None)
            if key is not None:
                share = 1 if key == DEFAULT_HITS or chain == PROXY else passes
                old = totals.get(key, Hits(0, 0))
                totals[key] = Hits(
                    old.packets + hit.packets // share, old.bytes + hit.bytes // share
                )
    return totals
