"""Work out the one `nft -f` transaction that turns what is installed into what is wanted, or
removes dockwall's table. Pure.

The table holds both families, so there is one transaction; the Change still has a
FamilyChange per family for people: its added/removed are the lines of that family (and the
lines that serve both, such as the bridge matches), and a family is pending when any of its
lines differ. Every pending FamilyChange carries the same payload, the whole table, and
NftablesBackend.apply runs it once. If the tables differ only in rule order, both families
are pending with no lines to show.
"""

from __future__ import annotations

from dockwall.backends.base import Change, FamilyChange
from dockwall.backends.nftables.model import FAMILY, NAME, Table, lines, removal, transaction
from dockwall.values import Family

FAMILIES = (Family.V4, Family.V6)
REPLACE = f"replace table {FAMILY} {NAME} (IPv4 and IPv6 in one nft transaction)"
DELETE = f"delete table {FAMILY} {NAME}"


def to_apply(installed: Table | None, wanted: Table) -> Change:
    if installed == wanted:
        return Change(tuple(FamilyChange(f, "") for f in FAMILIES))
    diffs = {f: _diff(installed, wanted, f) for f in FAMILIES}
    reorder_only = not any(a or r for a, r in diffs.values())
    payload = elements_only(installed, wanted) or transaction(wanted)
    return Change(
        tuple(
            FamilyChange(f, payload, added, removed, REPLACE)
            if added or removed or reorder_only
            else FamilyChange(f, "")
            for f, (added, removed) in diffs.items()
        )
    )


def elements_only(installed: Table | None, wanted: Table) -> str:
    """Where only set elements differ (containers came or went, a group changed): refill just
    the sets that differ, in one transaction, so a change costs what changed, not the whole
    table. "" where more than that differs (then the table is replaced whole)."""
    if installed is None or (installed.chains, installed.extras) != (wanted.chains, ()):
        return ""
    before = {s.name: s for s in installed.sets}
    if set(before) != {s.name for s in wanted.sets}:
        return ""
    lines = []
    for s in wanted.sets:
        old = before[s.name]
        if (old.type, old.flags) != (s.type, s.flags):
            return ""
        if old.elements != s.elements:
            lines.append(f"flush set {FAMILY} {NAME} {s.name}")
            if s.elements:
                lines.append(f"add element {FAMILY} {NAME} {s.name} {{ {', '.join(s.elements)} }}")
    return "\n".join(lines) + "\n"


def to_remove(installed: Table | None) -> Change:
    if installed is None:
        return Change(tuple(FamilyChange(f, "") for f in FAMILIES))
    return Change(
        tuple(
            FamilyChange(f, removal(), (), _diff(installed, None, f)[1], DELETE) for f in FAMILIES
        )
    )


def _diff(
    old: Table | None, new: Table | None, family: Family
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    def of(t: Table | None) -> list[str]:
        return [] if t is None else [line for f, line in lines(t) if f in (None, family)]

    before, after = of(old), of(new)
    before_set, after_set = set(before), set(after)
    return (
        tuple(x for x in after if x not in before_set),
        tuple(x for x in before if x not in after_set),
    )
