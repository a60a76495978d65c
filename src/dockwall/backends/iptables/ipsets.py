"""Large source lists as ipsets (hash:net, one per rule and family), so that a new connection
tests one set instead of walking one rule per address, and a changed group is a set swap,
not a rule rewrite. Pure: decides, parses `ipset save`, and writes `ipset restore` input.

Sets are named dw4-<rule> / dw6-<rule> (ipset names are at most 31 characters; a longer rule
name is shortened with a digest). A change is three steps around the iptables transactions:
prepare (create new sets, and a filled copy of each changed one), commit after the rules are
in (swap each copy in, destroy the copies and the sets no rule uses any more), or abort if
the rules were refused (destroy what prepare made): the old rules never see a half-made set.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from dockwall.ruleset import Allow, Ruleset
from dockwall.values import Family, IPNetwork, checked_name

THRESHOLD = 8  # more sources than this in one family: use a set
PREFIXES = {Family.V4: "dw4-", Family.V6: "dw6-"}
NEXT = "-n"  # suffix of the copy that is filled, then swapped in
MAX_NAME = 31

Sets = dict[str, frozenset[IPNetwork]]  # set name -> members


@dataclass(frozen=True)
class Steps:
    prepare: str = ""
    commit: str = ""
    abort: str = ""


def uses_set(allow: Allow) -> bool:
    return allow.sources is not None and len(allow.sources) > THRESHOLD


def name(family: Family, rule: str) -> str:
    base = PREFIXES[family] + checked_name(rule)
    if len(base) + len(NEXT) <= MAX_NAME:
        return base
    digest = hashlib.sha256(rule.encode()).hexdigest()[:8]
    return f"{PREFIXES[family]}{rule[: MAX_NAME - len(NEXT) - 13]}-{digest}"


def wanted(family: Family, ruleset: Ruleset) -> Sets:
    """The sets one family's rules use (ruleset already narrowed to the family)."""
    return {name(family, a.rule): frozenset(a.sources or ()) for a in ruleset.allows if uses_set(a)}


def parse(text: str) -> Sets:
    """dockwall's sets in `ipset save` output."""
    found: dict[str, set[IPNetwork]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1].startswith(tuple(PREFIXES.values())):
            if words[0] == "create":
                found.setdefault(words[1], set())
            elif words[0] == "add" and len(words) >= 3:
                found.setdefault(words[1], set()).add(ipaddress.ip_network(words[2]))
    return {k: frozenset(v) for k, v in found.items()}


def steps(installed: Sets, want: dict[Family, Sets]) -> Steps:
    prepare, commit, abort = [], [], []
    all_wanted = {n: (f, members) for f, sets in want.items() for n, members in sets.items()}
    for set_name, (family, members) in all_wanted.items():
        if set_name not in installed:
            prepare += _create(set_name, family, members)
            abort.append(f"destroy {set_name}")
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
    return Steps(_text(prepare), _text(commit), _text(abort))


def remove_all(installed: Sets) -> str:
    return _text([f"destroy {n}" for n in installed])


def _create(set_name: str, family: Family, members: frozenset[IPNetwork]) -> list[str]:
    kind = "inet" if family is Family.V4 else "inet6"
    size = max(1024, 2 * len(members))
    lines = [f"create {set_name} hash:net family {kind} maxelem {max(65536, size)}"]
    return lines + [f"add {set_name} {m}" for m in sorted(members, key=str)]


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
