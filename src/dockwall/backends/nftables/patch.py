"""Render a Ruleset by patching the rendering of the one before it. Pure.

The daemon compiles anew on every container event, and mostly only some allows' destinations
differ from last time (a container came, went or moved). Rendering the whole table again
costs what exists (tens of milliseconds for 1000 containers and 10,000 source addresses);
this re-renders only the allows whose destinations changed, and, if one of them logs, the
logging part, and reuses every other set and chain object. Anything else that differs, or a
change that would alter any rule (an allow's destinations appearing or vanishing in a
family), gives None: render the whole table.

The result is always equal to render.render(after) (see tests/unit/test_nftables_patch.py).
"""

from __future__ import annotations

from dataclasses import replace

from dockwall.backends.nftables import render
from dockwall.backends.nftables.model import GOVERNED, LOG_PREFIX, NftSet, Rule, Table
from dockwall.model.ruleset import Allow, Ruleset


def patch(before: Ruleset, rendered: Table, after: Ruleset) -> Table | None:
    """render.render(after), given rendered == render.render(before); None where a patch
    would not do."""
    changed = _changes(before, after)
    if changed is None:
        return None
    if not changed and before.listeners == after.listeners:
        return rendered
    sets = _rerendered(before, after, changed)
    if sets is None or not {s.name for s in rendered.sets}.issuperset(sets):
        return None
    if any(new.log for _, new in changed) and not _same_logging(rendered, after, sets):
        return None
    return Table(
        tuple(sets.get(s.name, s) for s in rendered.sets), rendered.chains, rendered.extras
    )


def _rerendered(
    before: Ruleset, after: Ruleset, changed: list[tuple[Allow, Allow]]
) -> dict[str, NftSet] | None:
    """The sets of the changed allows and the host ports, rendered anew; None where a rule
    would appear or vanish (then the table is rendered whole)."""
    sets: dict[str, NftSet] = {}
    for old, new in changed:
        if render.allow_rules(old, {}) != render.allow_rules(new, sets):
            return None
        if render.proxy_rules(old, {}) != render.proxy_rules(new, sets):
            return None  # a family's host ports appear or vanish
    if before.listeners != after.listeners and render.input_entry(before, {}) != render.input_entry(
        after, sets
    ):
        return None
    return sets


def _changes(before: Ruleset, after: Ruleset) -> list[tuple[Allow, Allow]] | None:
    """The allows (before, after) that differ, where nothing else differs but some allows'
    destinations and the host ports published (a container came, went or moved: its
    address and its ports); None where anything else does. Host ports are set elements
    here (listen4/6, lsn4/6-<rule>); the iptables backend writes them as rules, so its own
    test (ruleset.destination_changes) leaves them out."""
    if before is after:
        return []
    if len(before.allows) != len(after.allows):
        return None
    if replace(before, allows=(), listeners=()) != replace(after, allows=(), listeners=()):
        return None
    pairs = zip(before.allows, after.allows, strict=True)
    changed = [(old, new) for old, new in pairs if old is not new and old != new]
    if any(
        replace(old, destinations=new.destinations, listeners=new.listeners) != new
        for old, new in changed
    ):
        return None
    return changed


def _same_logging(rendered: Table, after: Ruleset, sets: dict[str, NftSet]) -> bool:
    """Whether after logs with the same rules and chains as rendered (its sets into sets)."""
    rules, chains = render.logging_rules(after, sets)
    governed = rendered.chain(GOVERNED)
    old_rules = [r for r in (governed.rules if governed else ()) if _goes_to_log(r)]
    old_chains = [c for c in rendered.chains if c.name.startswith(LOG_PREFIX)]
    return rules == old_rules and sorted(chains, key=lambda c: c.name) == old_chains


def _goes_to_log(rule: Rule) -> bool:
    return bool(rule.exprs) and rule.exprs[-1].startswith(f"goto {LOG_PREFIX}")
