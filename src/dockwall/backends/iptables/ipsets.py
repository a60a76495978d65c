"""ipsets (hash:net, one per family), so that a new connection tests one set instead of
walking one rule per address. Pure: decides, parses `ipset save`, and writes `ipset restore`
input. Two kinds:

- Source sets, for large source lists: dw4-<rule> / dw6-<rule> (ipset names are at most 31
  characters; a longer rule name is shortened with a digest). A changed group is a set swap,
  not a rule rewrite.
- Class sets, the containers of one class (the addresses that the same allows name):
  dwc4-<digest> / dwc6-<digest>, the digest of those allows' rule names. A set's meaning
  never changes, only its members: a container coming or going is one element added or
  deleted, not a rule, and its class chain is found by a set lookup.

A change is three steps around the iptables transactions: prepare (create new sets; a filled
copy of each changed source set; class set members deleted, then added, so that an address
is never in two classes at once and is dropped, not let through, while it moves), commit
after the rules are in (swap each copy in, destroy the copies and the sets no rule uses any
more), or abort if the rules were refused (undo prepare): the old rules never see a
half-made source set.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from dockwall.backends.iptables.classes import destination_classes
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, IPNetwork, checked_name

THRESHOLD = 8  # more sources than this in one family: use a set
PREFIXES = {Family.V4: "dw4-", Family.V6: "dw6-"}
CLASS_PREFIXES = {Family.V4: "dwc4-", Family.V6: "dwc6-"}
# an outbound or between rule's destinations (its sources are in its dw4-/dw6- set)
DEST_PREFIXES = {Family.V4: "dwd4-", Family.V6: "dwd6-"}
NEXT = "-n"  # suffix of the copy that is filled, then swapped in
MAX_NAME = 31

OURS = (*PREFIXES.values(), *CLASS_PREFIXES.values(), *DEST_PREFIXES.values())
Sets = dict[str, frozenset[IPNetwork]]  # set name -> members


@dataclass(frozen=True)
class Steps:
    prepare: str = ""
    commit: str = ""
    abort: str = ""


def uses_set(allow: Allow) -> bool:
    return allow.sources is not None and len(allow.sources) > THRESHOLD


def name(family: Family, rule: str, prefixes: dict[Family, str] = PREFIXES) -> str:
    base = prefixes[family] + checked_name(rule)
    if len(base) + len(NEXT) <= MAX_NAME:
        return base
    digest = hashlib.sha256(rule.encode()).hexdigest()[:8]
    return f"{prefixes[family]}{rule[: MAX_NAME - len(NEXT) - 13]}-{digest}"


def dest_name(family: Family, rule: str) -> str:
    return name(family, rule, DEST_PREFIXES)


def egress_by_set(destinations: tuple[IPNetwork, ...] | None, containers: bool) -> bool:
    """Whether an outbound or between rule's destinations are matched by a set: always for
    containers (between: they come and go), else above THRESHOLD."""
    return destinations is not None and (containers or len(destinations) > THRESHOLD)


def class_name(family: Family, members: list[Allow]) -> str:
    """The set of the containers that exactly these allows name."""
    return class_set(family, tuple(a.rule for a in members))


def class_set(family: Family, rules: tuple[str, ...]) -> str:
    """The set of the containers that the allows of exactly these rules name."""
    digest = hashlib.sha256("\n".join(rules).encode()).hexdigest()[:16]
    return CLASS_PREFIXES[family] + digest


def wanted(family: Family, ruleset: Ruleset) -> Sets:
    """The sets one family's rules use (ruleset already narrowed to the family)."""
    sets = {name(family, a.rule): frozenset(a.sources or ()) for a in ruleset.allows if uses_set(a)}
    for destinations, members in destination_classes(ruleset.allows):
        sets[class_name(family, members)] = frozenset(destinations)
    for rules, containers in ((ruleset.outbound, False), (ruleset.between, True)):
        for e in rules:
            sets[name(family, e.rule)] = frozenset(e.sources)
            if egress_by_set(e.destinations, containers):
                sets[dest_name(family, e.rule)] = frozenset(e.destinations or ())
    return sets


def is_class(set_name: str) -> bool:
    return set_name.startswith(tuple(CLASS_PREFIXES.values()))


def parse(text: str) -> Sets:
    """dockwall's sets in `ipset save` output."""
    found: dict[str, set[IPNetwork]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1].startswith(OURS):
            if words[0] == "create":
                found.setdefault(words[1], set())
            elif words[0] == "add" and len(words) >= 3:
                found.setdefault(words[1], set()).add(ipaddress.ip_network(words[2]))
    return {k: frozenset(v) for k, v in found.items()}


def steps(installed: Sets, want: dict[Family, Sets]) -> Steps:
    prepare, commit, abort = [], [], []
    all_wanted = {n: (f, members) for f, sets in want.items() for n, members in sets.items()}
    moves = Moves()
    for set_name, (family, members) in all_wanted.items():
        if set_name not in installed:
            prepare += _create(set_name, family, members)
            abort.append(f"destroy {set_name}")
        elif is_class(set_name):
            moves.add(set_name, installed[set_name], members)
        elif installed[set_name] != members:
            copy = set_name + NEXT
            prepare += [f"destroy {copy}"] if copy in installed else []
            prepare += _create(copy, family, members)
            commit += [f"swap {copy} {set_name}", f"destroy {copy}"]
            abort.append(f"destroy {copy}")
    for set_name in installed:
        base = set_name.removesuffix(NEXT)
        if set_name == base and base not in all_wanted:
            commit.append(f"destroy {set_name}")  # no rule uses it any more
        elif set_name != base and f"swap {set_name} {base}" not in commit:
            commit.append(f"destroy {set_name}")  # a copy left by an earlier failure
    return Steps(text(prepare + moves.forward()), text(commit), text(moves.back() + abort))


@dataclass
class Moves:
    """Members deleted from and added to class sets in place: deletions first, so an address
    is never in two classes at once (in none, it meets the default: dropped)."""

    deleted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def add(self, set_name: str, old: frozenset[IPNetwork], new: frozenset[IPNetwork]) -> None:
        self.deleted += [f"{set_name} {m}" for m in sorted(old - new, key=str)]
        self.added += [f"{set_name} {m}" for m in sorted(new - old, key=str)]

    def lines(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """For people, as `plan` shows rule lines: the members that come, and those that go."""
        return tuple(f"add {m}" for m in self.added), tuple(f"add {m}" for m in self.deleted)

    def forward(self) -> list[str]:
        return [f"del {m}" for m in self.deleted] + [f"add {m}" for m in self.added]

    def back(self) -> list[str]:
        return [f"del {m}" for m in self.added] + [f"add {m}" for m in self.deleted]


def class_moves(installed: Sets, want: Sets) -> Moves:
    """How the members of the class sets in both installed and want differ."""
    moves = Moves()
    for set_name, members in want.items():
        if is_class(set_name) and set_name in installed:
            moves.add(set_name, installed[set_name], members)
    return moves


def remove_all(installed: Sets) -> str:
    return text([f"destroy {n}" for n in installed])


def _create(set_name: str, family: Family, members: frozenset[IPNetwork]) -> list[str]:
    kind = "inet" if family is Family.V4 else "inet6"
    size = max(1024, 2 * len(members))
    lines = [f"create {set_name} hash:net family {kind} maxelem {max(65536, size)}"]
    return lines + [f"add {set_name} {m}" for m in sorted(members, key=str)]


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
