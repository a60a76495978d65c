"""Which class each container address is in, kept from one plan to the next, so that a
container coming or going is worked out from what changed, not from everything. Pure.

A class is the set of allows that name an address (render.py gives each class a chain,
ipsets.py a set of its addresses). When a new Ruleset differs from the last one only in
which addresses some allows name, and every address moves into a class that already exists
(and no class is left empty; an allow's own class, the containers only it names, is always
there, even empty), the chains stay exactly as they are and the change is a few set
members: `moves` says which. Anything else (a class of several allows appears or empties,
a source, port, interface, bridge or host port changed) is None, and the caller renders
everything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dockwall.model.ruleset import Allow, Ruleset, destination_changes
from dockwall.model.values import Family, IPNetwork

Key = tuple[str, ...]  # the names of the rules whose allows name an address, in policy order


def destination_classes(
    allows: tuple[Allow, ...],
) -> list[tuple[list[IPNetwork], list[Allow]]]:
    """Container addresses grouped by the exact allows that name them: containers with the
    same allows form one class. Classes are ordered by the positions of their allows, so
    which classes there are (and their order) depends only on the groupings that exist, not
    on which containers are in them: a container joining an existing class changes nothing
    but that class's members. Each allow that selects containers has its own class (the
    containers only it names) even while it has none, so that a rule's only container going
    and coming back (a restart) moves one set member and renders no chain."""
    covering: dict[IPNetwork, list[int]] = {}
    classes: dict[tuple[int, ...], list[IPNetwork]] = {}
    for position, allow in enumerate(allows):
        if allow.destinations is not None:
            classes[(position,)] = []
        for destination in allow.destinations or ():
            covering.setdefault(destination, []).append(position)
    for destination, positions in covering.items():
        classes.setdefault(tuple(positions), []).append(destination)
    return [(classes[key], [allows[p] for p in key]) for key in sorted(classes)]


@dataclass(frozen=True)
class Move:
    address: IPNetwork
    old: Key  # () where the address was in no class
    new: Key  # () where it is in none now


@dataclass(frozen=True)
class Index:
    ruleset: Ruleset  # as compiled, both families
    keys: dict[Family, dict[IPNetwork, Key]]
    sizes: dict[Family, Counter[Key]]  # addresses per class


def index(ruleset: Ruleset, narrowed: dict[Family, Ruleset]) -> Index:
    """The classes of ruleset; narrowed holds it narrowed to each family."""
    keys: dict[Family, dict[IPNetwork, Key]] = {}
    for family, one in narrowed.items():
        covering: dict[IPNetwork, list[str]] = {}
        for allow in one.allows:
            for destination in allow.destinations or ():
                covering.setdefault(destination, []).append(allow.rule)
        keys[family] = {d: tuple(names) for d, names in covering.items()}
    return Index(ruleset, keys, {f: Counter(k.values()) for f, k in keys.items()})


def moves(last: Index, new: Ruleset) -> tuple[Index, dict[Family, list[Move]]] | None:
    """The addresses that change class between last's Ruleset and new, with the Index of new;
    None where more than class members changes."""
    changed = destination_changes(last.ruleset, new)
    if changed is None or any(None in (a.destinations, b.destinations) for a, b in changed):
        return None  # (an allow for every container has no class)
    order = {a.rule: position for position, a in enumerate(new.allows)}
    keys, sizes, found = dict(last.keys), dict(last.sizes), {}
    for family in last.keys:
        version = 4 if family is Family.V4 else 6
        own: set[Key] = {
            (a.rule,) for a in new.allows if a.destinations is not None and _in_family(a, version)
        }
        result = _family_moves(
            family, changed, last.keys[family], last.sizes[family], order, own=own
        )
        if result is None:
            return None
        keys[family], sizes[family], found[family] = result
    return Index(new, keys, sizes), found


def _family_moves(
    family: Family,
    changed: list[tuple[Allow, Allow]],
    keys: dict[IPNetwork, Key],
    sizes: Counter[Key],
    order: dict[str, int],
    *,
    own: set[Key],
) -> tuple[dict[IPNetwork, Key], Counter[Key], list[Move]] | None:
    gained, lost = _named(family, changed)
    if not gained and not lost:
        return keys, sizes, []
    existing = set(sizes) | own  # (each allow's own class is rendered even when empty)
    keys, sizes, found = dict(keys), Counter(sizes), []
    for address in gained.keys() | lost.keys():
        old = keys.get(address, ())
        names = (set(old) - lost.get(address, set())) | gained.get(address, set())
        new = tuple(sorted(names, key=order.__getitem__))
        if new == old:
            continue
        for key, step in ((old, -1), (new, 1)):
            if key:
                sizes[key] += step
        if new:
            keys[address] = new
        else:
            del keys[address]
        found.append(Move(address, old, new))
    sizes = +sizes
    if set(sizes) | own != existing:
        return None  # a class emptied or appeared: its chain goes or comes
    return keys, sizes, found


def _named(
    family: Family, changed: list[tuple[Allow, Allow]]
) -> tuple[dict[IPNetwork, set[str]], dict[IPNetwork, set[str]]]:
    """The rules that now name an address and did not, and those that no longer do."""
    version = 4 if family is Family.V4 else 6
    gained: dict[IPNetwork, set[str]] = {}
    lost: dict[IPNetwork, set[str]] = {}
    for before, after in changed:
        if not _in_family(after, version):
            continue  # (its sources are not in this family: it names nothing here)
        was = {d for d in before.destinations or () if d.version == version}
        now = {d for d in after.destinations or () if d.version == version}
        for address in now - was:
            gained.setdefault(address, set()).add(after.rule)
        for address in was - now:
            lost.setdefault(address, set()).add(after.rule)
    return gained, lost


def _in_family(allow: Allow, version: int) -> bool:
    return allow.sources is None or any(s.version == version for s in allow.sources)
