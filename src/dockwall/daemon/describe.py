"""Say in one line what changed on the host and in the rules, and why. Pure."""

from __future__ import annotations

from dockwall.hoststate import Container, HostState

Addresses = tuple[str, ...]


def host_changes(old: HostState | None, new: HostState) -> list[str]:
    """'container web started: 192.0.2.5', 'container web restarted: a -> b', ..."""
    if old is None:
        return []
    before = {c.name: _addresses(c) for c in old.containers}
    after = {c.name: _addresses(c) for c in new.containers}
    ids_before = {c.name: c.id for c in old.containers}
    ids_after = {c.name: c.id for c in new.containers}
    said = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was is None and now is not None:
            said.append(f"container {name} started: {_list(now)}")
        elif now is None and was is not None:
            said.append(f"container {name} stopped: {_list(was)}")
        elif was != now or ids_before[name] != ids_after[name]:
            verb = "restarted" if ids_before[name] == ids_after[name] else "replaced"
            said.append(f"container {name} {verb}: {_list(was)} -> {_list(now)}")
    return said


def _addresses(container: Container) -> Addresses:
    found = []
    for ep in container.endpoints:
        found += [str(a) for a in (ep.ipv4, ep.ipv6) if a is not None]
    return tuple(found)


def _list(addresses: Addresses | None) -> str:
    return ", ".join(addresses or ()) or "no address"
