"""Say in one line what changed on the host and in the rules, and why. Pure."""

from __future__ import annotations

from dockwall.model.hoststate import Container, HostState

Addresses = tuple[str, ...]


def host_changes(old: HostState | None, new: HostState) -> list[str]:
    """'container web started: 192.0.2.5', 'container web restarted: a -> b', ..."""
    if old is None:
        return []
    before = {c.name: c for c in old.containers}
    after = {c.name: c for c in new.containers}
    found = (_change(name, before.get(name), after.get(name)) for name in sorted(before | after))
    return [line for line in found if line]


def _change(name: str, was: Container | None, now: Container | None) -> str:
    if now is not None and not now.running:
        if was is None:  # created: its host ports are governed before it starts
            ports = ", ".join(f"{p.host_port}/{p.proto}" for p in now.ports) or "none"
            return f"container {name} created: host ports {ports} governed"
        return ""
    if now is None:
        return (
            ""
            if was is None or not was.running
            else f"container {name} stopped: " + _list(_addresses(was))
        )
    if was is None or not was.running:
        return f"container {name} started: {_list(_addresses(now))}"
    old, new = _addresses(was), _addresses(now)
    if old == new and was.id == now.id:
        return ""
    verb = "restarted" if was.id == now.id else "replaced"
    return f"container {name} {verb}: {_list(old)} -> {_list(new)}"


def _addresses(container: Container) -> Addresses:
    found = []
    for ep in container.endpoints:
        found += [str(a) for a in (ep.ipv4, ep.ipv6) if a is not None]
    return tuple(found)


def _list(addresses: Addresses | None) -> str:
    return ", ".join(addresses or ()) or "no address"
