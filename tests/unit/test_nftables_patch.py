"""Patching the last rendering gives exactly what a full rendering gives."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dockwall.backends.nftables import model, patch, render
from dockwall.model.ruleset import Allow, Listener, Ruleset
from dockwall.model.values import Family, IPNetwork, PortRange, Proto, Verdict

net = ipaddress.ip_network
SOURCES = [
    net(a) for a in ("198.51.100.10", "198.51.100.11", "203.0.113.0/28", "2001:db8:100::10", "::/0")
]
HOSTS = [net(f"192.0.2.{i}") for i in range(1, 9)] + [net(f"2001:db8:d0c::{i}") for i in (1, 2, 3)]
PORTS = [PortRange(Proto.TCP, 80, 80), PortRange(Proto.TCP, 81, 90), PortRange(Proto.UDP, 53, 53)]
LISTENERS = [
    Listener(Proto.TCP, 8080, net("0.0.0.0/0")),
    Listener(Proto.TCP, 8080, net("::/0")),
    Listener(Proto.TCP, 5432, net("0.0.0.0/0")),
    Listener(Proto.UDP, 53, net("192.0.2.1/32")),
    Listener(Proto.TCP, 5432, net("::/0")),
]


def listeners() -> st.SearchStrategy[tuple[Listener, ...]]:
    return st.lists(st.sampled_from(LISTENERS), unique=True).map(tuple)


def nets(
    pool: list[IPNetwork], min_size: int = 0
) -> st.SearchStrategy[tuple[IPNetwork, ...] | None]:
    return st.none() | st.lists(st.sampled_from(pool), min_size=min_size, unique=True).map(
        lambda found: tuple(sorted(found, key=lambda n: (n.version, n)))
    )


@st.composite
def allows(draw: st.DrawFn, name: str) -> Allow:
    ports = draw(st.none() | st.lists(st.sampled_from(PORTS), min_size=1, unique=True))
    return Allow(
        name,
        1,
        (name,),
        draw(st.sampled_from([None, "eth0"])),
        draw(nets(SOURCES)),
        draw(nets(HOSTS, min_size=1)),
        None if ports is None else tuple(sorted(ports)),
        draw(st.booleans()),
        draw(st.none() | listeners()),
    )


@st.composite
def rulesets(draw: st.DrawFn) -> Ruleset:
    names = draw(st.lists(st.sampled_from(["a", "b", "web", "db"]), unique=True, max_size=4))
    return Ruleset(
        ("docker0",),
        ("br-",),
        tuple(draw(allows(n)) for n in names),
        draw(st.sampled_from(list(Verdict))),
        draw(st.booleans()),
        listeners=draw(listeners()),
    )


@st.composite
def moved(draw: st.DrawFn, allow: Allow) -> Allow:
    """allow as compiled later: unchanged, a container more or less in a family it already
    reaches (the usual event), or any destinations at all."""
    how = draw(st.sampled_from(["same", "container", "container", "container", "any", "ports"]))
    if how == "ports":  # its containers' host ports changed (one came, went or moved)
        return replace(allow, listeners=draw(st.none() | listeners()))
    if how == "any":
        return replace(allow, destinations=draw(nets(HOSTS)))
    if how == "same" or not allow.destinations:
        return allow
    host = draw(
        st.sampled_from(
            [h for h in HOSTS if any(h.version == d.version for d in allow.destinations)]
        )
    )
    found = set(allow.destinations) ^ {host}
    if not any(h.version == host.version for h in found):
        return allow
    return replace(allow, destinations=tuple(sorted(found, key=lambda n: (n.version, n))))


@st.composite
def changes(draw: st.DrawFn) -> tuple[Ruleset, Ruleset]:
    """A ruleset and one compiled later: some allows' destinations differ, sometimes more."""
    before = draw(rulesets())
    after = replace(before, allows=tuple(draw(moved(a)) for a in before.allows))
    if draw(st.booleans()):  # the host ports published, as a container comes or goes
        after = replace(after, listeners=draw(listeners()))
    if draw(st.integers(0, 9)) == 7:  # now and then, more than destinations
        after = draw(st.sampled_from([replace(after, default=Verdict.REJECT), draw(rulesets())]))
    return before, after


def in_family(nets: tuple[IPNetwork, ...] | None, family: Family) -> bool:
    return bool(nets and any(Family.of(n) is family for n in nets))


def same_shape(old: Allow, new: Allow) -> bool:
    """Destinations changed, but not whether there are any in each family."""
    if (old.destinations is None) != (new.destinations is None):
        return False
    return all(in_family(old.destinations, f) == in_family(new.destinations, f) for f in Family)


@settings(max_examples=400, deadline=None)
@given(changes())
def test_a_patch_equals_the_full_rendering(change: tuple[Ruleset, Ruleset]) -> None:
    before, after = change
    rendered = render.render(before)
    patched = patch.patch(before, rendered, after)
    if patched is not None:
        assert patched == render.render(after)
    only_destinations = len(before.allows) == len(after.allows) and all(
        replace(old, destinations=new.destinations) == new
        for old, new in zip(before.allows, after.allows, strict=True)
    )  # and the host ports (ruleset.listeners): set elements too
    pairs = zip(before.allows, after.allows, strict=True)
    if (
        only_destinations
        and (before.default, before.log_default) == (after.default, after.log_default)
        and all(old == new or (same_shape(old, new) and not old.log) for old, new in pairs)
    ):
        assert patched is not None


def web(destinations: tuple[IPNetwork, ...]) -> Allow:
    return Allow("web", 1, ("any",), "eth0", None, destinations, (PORTS[0],))


def test_unchanged_sets_and_chains_are_the_same_objects() -> None:
    admins = Allow("admins", 2, ("admins",), "eth0", tuple(SOURCES[:2]), None, None)
    before = Ruleset(("docker0",), ("br-",), (web(tuple(HOSTS[:1])), admins), Verdict.DROP)
    after = replace(before, allows=(web(tuple(HOSTS[:2])), admins))
    rendered = render.render(before)
    patched = patch.patch(before, rendered, after)
    assert patched is not None and patched == render.render(after)
    assert patched.chains is rendered.chains
    for old, new in zip(rendered.sets, patched.sets, strict=True):
        assert (old is new) == (old.name != "dst4_tcp-web"), old.name
    assert patch.patch(after, patched, after) is patched


def test_a_rule_appearing_or_a_changed_frame_renders_whole() -> None:
    before = Ruleset(("docker0",), ("br-",), (web(tuple(HOSTS[:1])),), Verdict.DROP)
    rendered = render.render(before)
    assert patch.patch(before, rendered, replace(before, bridges=("docker0", "br-x"))) is None
    assert patch.patch(before, rendered, replace(before, allows=())) is None  # a rule goes
    # A family's first container: its rule was there already, matching nothing (an empty
    # set), so only elements change.
    v6_too = replace(before, allows=(web((HOSTS[0], HOSTS[-1])),))
    assert model.text(rendered).count("dst6_tcp-web") == 2
    patched = patch.patch(before, rendered, v6_too)
    assert patched == render.render(v6_too) and patched.chains is rendered.chains


def test_host_ports_coming_and_going_are_set_elements_too() -> None:
    """A container with published ports starting: its address and its host ports join sets
    (dst4_tcp-web, lsn4-web, listen4), no rule changes, so the table is patched."""
    one, two = LISTENERS[0], LISTENERS[2]
    before = Ruleset(
        ("docker0",), ("br-",), (replace(web(tuple(HOSTS[:1])), listeners=(one,)),),
        Verdict.DROP, listeners=(one,),
    )  # fmt: skip
    after = replace(
        before, allows=(replace(web(tuple(HOSTS[:2])), listeners=(one, two)),), listeners=(one, two)
    )
    rendered = render.render(before)
    patched = patch.patch(before, rendered, after)
    assert patched is not None and patched == render.render(after)
    assert patched.chains is rendered.chains
    changed = {new.name for old, new in zip(rendered.sets, patched.sets, strict=True) if old != new}
    assert changed == {"dst4_tcp-web", "lsn4-web", "listen4"}


def test_a_rules_only_container_restarting_is_elements_each_way() -> None:
    """No churn: web's rules and sets stay while it has no container (with its host port,
    as a published container has), so its only container stopping and starting again
    patches elements and reuses every chain."""
    one = LISTENERS[0]
    running = Ruleset(
        ("docker0",), ("br-",), (replace(web((HOSTS[0],)), listeners=(one,)),), Verdict.DROP,
        listeners=(one,),
    )  # fmt: skip
    stopped = replace(running, allows=(replace(web(()), listeners=()),), listeners=())
    rendered = render.render(running)
    gone = patch.patch(running, rendered, stopped)
    assert gone is not None and gone == render.render(stopped)
    assert gone.chains is rendered.chains
    back = patch.patch(stopped, gone, running)
    assert back == rendered and back is not None and back.chains is rendered.chains
