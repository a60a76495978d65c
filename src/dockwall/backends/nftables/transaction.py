"""Work out the one transaction that turns what is installed into what is wanted, or removes
dockwall's table. Pure.

The table holds both families, so there is one transaction (Writes); the Change still has
a FamilyChange per family for people: its added/removed are the lines of that family (and
the lines that serve both, such as the bridge matches), and a family is pending when any of
its lines differ. If the tables differ only in rule order, both families are pending with no
lines to show.

The script, in nft's language, is one of:
- the whole table (replaced), where more than set elements differ;
- where only elements differ and installed was read from the kernel: each set that differs
  flushed and filled again (whatever the kernel holds, it ends up as wanted);
- where only elements differ and installed is what dockwall itself last wrote (trusted):
  a delta, `delete element` for what went and `add element` for what came, so a change costs
  what changed. Writes then carries the delta's set changes too: NftablesBackend writes them
  over netlink (netlink.py); if the kernel refuses them (the sets were not what dockwall
  trusted), it replaces the table whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dockwall.backends.base import Change, FamilyChange
from dockwall.backends.nftables.model import (
    FAMILY,
    NAME,
    NftSet,
    Table,
    lines,
    removal,
    transaction,
)
from dockwall.backends.nftables.netlink import SetChange
from dockwall.model.values import Family

FAMILIES = (Family.V4, Family.V6)
REPLACE = f"replace table {FAMILY} {NAME} (IPv4 and IPv6 in one nft transaction)"
ELEMENTS = f"change set elements in table {FAMILY} {NAME} (IPv4 and IPv6 in one transaction)"
DELETE = f"delete table {FAMILY} {NAME}"


@dataclass(frozen=True)
class Writes:
    """The one nft transaction for both families ("" if nothing to do); for a delta, also its
    set changes, which are written over netlink instead (script is the same in nft's terms)."""

    script: str
    delta: tuple[SetChange, ...] | None = None

    @property
    def pending(self) -> bool:
        return bool(self.script)


NOTHING = Change(tuple(FamilyChange(f) for f in FAMILIES), Writes(""))


def to_apply(installed: Table | None, wanted: Table) -> Change[Writes]:
    if installed == wanted:
        return NOTHING
    diffs = {f: _diff(installed, wanted, f) for f in FAMILIES}
    reorder_only = not any(a or r for a, r in diffs.values())
    refill = elements_only(installed, wanted)
    script, hook = (refill, ELEMENTS) if refill else (transaction(wanted), REPLACE)
    return Change(
        tuple(
            FamilyChange(f, True, added, removed, hook)
            if added or removed or reorder_only
            else FamilyChange(f)
            for f, (added, removed) in diffs.items()
        ),
        Writes(script),
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


def to_update(trusted: Table, wanted: Table) -> Change[Writes] | None:
    """Where only set elements differ from what dockwall itself last wrote (trusted, not read
    back): the change as a delta. None where more than that differs."""
    changes = set_changes(trusted, wanted)
    if changes is None:
        return None
    return _elements_change(changes, {s.name: s for s in wanted.sets})


def set_changes(installed: Table, wanted: Table) -> list[SetChange] | None:
    """What goes from and comes to each set, in wanted's order, where only set elements
    differ; None where more than that does. Sets that are the same object are skipped
    unread (NftablesBackend patches the table it last rendered, see patch.py)."""
    if installed.chains != wanted.chains or installed.extras or wanted.extras:
        return None
    if [s.name for s in installed.sets] != [s.name for s in wanted.sets]:
        return None
    found = []
    for old, new in zip(installed.sets, wanted.sets, strict=True):
        if old is new or old == new:
            continue
        if (old.type, old.flags) != (new.type, new.flags):
            return None
        went, came = set(old.elements), set(new.elements)
        removed = tuple(e for e in old.elements if e not in came)
        added = tuple(e for e in new.elements if e not in went)
        found.append(SetChange(new.name, new.type, removed, added))
    return found


def delta(changes: Sequence[SetChange]) -> str:
    """The changes in nft's language: every deletion, then every addition."""
    out = [_element_line("delete", c.name, c.removed) for c in changes if c.removed]
    out += [_element_line("add", c.name, c.added) for c in changes if c.added]
    return "".join(out)


def _element_line(verb: str, name: str, elements: tuple[str, ...]) -> str:
    return f"{verb} element {FAMILY} {NAME} {name} {{ {', '.join(elements)} }}\n"


def _elements_change(changes: list[SetChange], sets: dict[str, NftSet]) -> Change[Writes]:
    script = delta(changes)
    if not script:  # the sets differ in the order of their elements only
        return NOTHING
    families = []
    for family in FAMILIES:
        mine = [c for c in changes if sets[c.name].family in (None, family)]
        added = tuple(f"set {c.name}: element {e}" for c in mine for e in c.added)
        removed = tuple(f"set {c.name}: element {e}" for c in mine for e in c.removed)
        pending = bool(added or removed)
        families.append(FamilyChange(family, pending, added, removed, ELEMENTS if pending else ""))
    return Change(tuple(families), Writes(script, tuple(changes)), delta=True)


def to_remove(installed: Table | None) -> Change[Writes]:
    if installed is None:
        return NOTHING
    return Change(
        tuple(FamilyChange(f, True, (), _diff(installed, None, f)[1], DELETE) for f in FAMILIES),
        Writes(removal()),
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
