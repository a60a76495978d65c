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

from dockwall.backends.nftables import render
from dockwall.backends.nftables.model import GOVERNED, LOG_PREFIX, NftSet, Rule, Table
from dockwall.model.ruleset import Ruleset, destination_changes


def patch(before: Ruleset, rendered: Table, after: Ruleset) -> Table | None:
    """render.render(after), given rendered == render.render(before); None where a patch
    would not do."""
    changed = destination_changes(before, after)
    if changed is None:
        return None
    if not changed:
        return rendered
    sets: dict[str, NftSet] = {}
    for old, new in changed:
        if render.allow_rules(old, {}) != render.allow_rules(new, sets):
            return None  # rules appear or vanish
    if any(new.log for _, new in changed) and not _same_logging(rendered, after, sets):
        return None
    if not {s.name for s in rendered.sets}.issuperset(sets):
        return None
    return Table(
        tuple(sets.get(s.name, s) for s in rendered.sets), rendered.chains, rendered.extras
    )


def _same_logging(rendered: Table, after: Ruleset, sets: dict[str, NftSet]) -> bool:
    """Whether after logs with the same rules and chains as rendered (its sets into sets)."""
    rules, chains = render.logging_rules(after, sets)
    governed = rendered.chain(GOVERNED)
    old_rules = [r for r in (governed.rules if governed else ()) if _goes_to_log(r)]
    old_chains = [c for c in rendered.chains if c.name.startswith(LOG_PREFIX)]
    return rules == old_rules and sorted(chains, key=lambda c: c.name) == old_chains


def _goes_to_log(rule: Rule) -> bool:
    return bool(rule.exprs) and rule.exprs[-1].startswith(f"goto {LOG_PREFIX}")
