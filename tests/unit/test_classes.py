"""A container moving between classes is worked out from what changed, and comes to exactly
what rendering everything gives: the same chains, and the same set members."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dockwall.backends.iptables import classes, ipsets, render
from dockwall.backends.iptables.classes import destination_classes
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, IPNetwork, PortRange, Proto, Verdict

POOL: list[IPNetwork] = [
    *(ipaddress.ip_network(f"192.0.2.{i}") for i in range(1, 7)),
    *(ipaddress.ip_network(f"2001:db8:d0c::{i}") for i in range(1, 7)),
]
SOURCES: list[tuple[IPNetwork, ...] | None] = [
    None,
    (ipaddress.ip_network("198.51.100.0/24"),),
    (ipaddress.ip_network("2001:db8:100::/64"),),
]
FAMILIES = (Family.V4, Family.V6)


def allow(n: int, sources: tuple[IPNetwork, ...] | None, to: list[IPNetwork]) -> Allow:
    port = (PortRange(Proto.TCP, 80 + n, 80 + n),)
    return Allow(f"r{n}", n, ("x",), "eth0", sources, tuple(sorted(set(to), key=str)), port)


@st.composite
def before_and_after(draw: st.DrawFn) -> tuple[Ruleset, Ruleset]:
    count = draw(st.integers(1, 4))
    allows = [
        allow(n, draw(st.sampled_from(SOURCES)), draw(st.lists(st.sampled_from(POOL))))
        for n in range(count)
    ]
    later = [
        replace(a, destinations=tuple(sorted(draw(st.sets(st.sampled_from(POOL))), key=str)))
        if draw(st.booleans())
        else a
        for a in allows
    ]
    before = Ruleset(("docker0",), ("br-",), tuple(allows), Verdict.DROP)
    return before, replace(before, allows=tuple(dict.fromkeys(later)))


def sets_of(ruleset: Ruleset) -> dict[Family, ipsets.Sets]:
    return {f: ipsets.wanted(f, ruleset.in_family(f)) for f in FAMILIES}


def class_keys(ruleset: Ruleset, family: Family) -> set[tuple[str, ...]]:
    allows = ruleset.in_family(family).allows
    return {tuple(a.rule for a in members) for _, members in destination_classes(allows)}


@settings(max_examples=300, deadline=None)
@given(before_and_after())
def test_moves_come_to_what_rendering_everything_gives(pair: tuple[Ruleset, Ruleset]) -> None:
    before, after = pair
    index = classes.index(before, {f: before.in_family(f) for f in FAMILIES})
    moved = classes.moves(index, after)
    same_classes = len(before.allows) == len(after.allows) and all(
        class_keys(before, f) == class_keys(after, f) for f in FAMILIES
    )
    if moved is None:
        assert not same_classes  # only where a class appears or empties
        return
    assert same_classes
    new_index, found = moved
    assert new_index == classes.index(after, {f: after.in_family(f) for f in FAMILIES})
    for family in FAMILIES:
        chains = render.render(family, before.in_family(family))
        assert chains == render.render(family, after.in_family(family))
        sets = {name: set(members) for name, members in sets_of(before)[family].items()}
        for move in found[family]:
            if move.old:
                sets[ipsets.class_set(family, move.old)].remove(move.address)
            if move.new:
                sets[ipsets.class_set(family, move.new)].add(move.address)
        assert {n: frozenset(m) for n, m in sets.items()} == sets_of(after)[family]


def test_a_container_joining_a_class_is_one_member() -> None:
    web = ipaddress.ip_network("192.0.2.1")
    newcomer = ipaddress.ip_network("192.0.2.2")
    before = Ruleset(("docker0",), ("br-",), (allow(0, None, [web]),), Verdict.DROP)
    after = replace(before, allows=(allow(0, None, [web, newcomer]),))
    index = classes.index(before, {f: before.in_family(f) for f in FAMILIES})
    moved = classes.moves(index, after)
    assert moved is not None
    assert moved[1] == {
        Family.V4: [classes.Move(newcomer, (), ("r0",))],
        Family.V6: [],
    }


def test_a_new_class_or_a_changed_port_is_rendered_whole() -> None:
    web = ipaddress.ip_network("192.0.2.1")
    before = Ruleset(
        ("docker0",), ("br-",), (allow(0, None, [web]), allow(1, None, [])), Verdict.DROP
    )
    index = classes.index(before, {f: before.in_family(f) for f in FAMILIES})
    new_class = replace(before, allows=(before.allows[0], allow(1, None, [web])))
    assert classes.moves(index, new_class) is None
    other_port = replace(before.allows[0], ports=(PortRange(Proto.TCP, 1, 1),))
    assert classes.moves(index, replace(before, allows=(other_port, before.allows[1]))) is None


def test_a_rules_only_container_restarting_is_one_member_each_way() -> None:
    """No class churn: r0's class is there while r0 has no container (an empty set and its
    chain), so its only container stopping and starting again moves one member each way,
    and the chains stay exactly as rendering everything gives them."""
    web = ipaddress.ip_network("192.0.2.1")
    running = Ruleset(("docker0",), ("br-",), (allow(0, None, [web]),), Verdict.DROP)
    stopped = replace(running, allows=(allow(0, None, []),))
    index = classes.index(running, {f: running.in_family(f) for f in FAMILIES})
    gone = classes.moves(index, stopped)
    assert gone is not None and gone[1][Family.V4] == [classes.Move(web, ("r0",), ())]
    back = classes.moves(gone[0], running)
    assert back is not None and back[1][Family.V4] == [classes.Move(web, (), ("r0",))]
    for family in FAMILIES:
        assert render.render(family, stopped.in_family(family)) == render.render(
            family, running.in_family(family)
        )
    assert sets_of(stopped)[Family.V4] == {ipsets.class_set(Family.V4, ("r0",)): frozenset()}
