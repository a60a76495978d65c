"""What a change of rules means in policy terms: which rules gain or lose which containers,
sources and ports, and who gains or loses the reach of which published port. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from dockwall.compile.exposure import exposure
from dockwall.model.hoststate import HostState
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import IPNetwork, Verdict

Names = Mapping[str, str]  # address -> container name


def rule_changes(old: Ruleset | None, new: Ruleset, names: Names | None = None) -> list[str]:
    """'rule public-web: + www-nginx 192.0.2.5, - www-nginx 192.0.2.2', 'rule x added', ..."""
    if old is None:
        return ["rules installed"]
    names = names or {}
    said = []
    before = {a.rule: a for a in old.allows}
    for allow in new.allows:
        previous = before.get(allow.rule)
        if previous is None:
            said.append(f"rule {allow.rule} added")
        elif previous != allow:
            said.append(f"rule {allow.rule} updated" + _delta(previous, allow, names))
    said += [f"rule {n} removed" for n in before.keys() - {a.rule for a in new.allows}]
    if (old.bridges, old.default, old.log_default) != (new.bridges, new.default, new.log_default):
        said.append("bridges, default or logging changed")
    for direction in ("outbound", "between"):
        said += _egress_changes(direction, old, new, names)
    return said


def _egress_changes(direction: str, old: Ruleset, new: Ruleset, names: Names) -> list[str]:
    """'outbound default: accept -> drop', 'outbound rule app-out: +app 192.0.2.5', ..."""
    said = []
    was, now = getattr(old, f"{direction}_default"), getattr(new, f"{direction}_default")
    if was != now:
        said.append(f"{direction} default: {_verdict(was)} -> {_verdict(now)}")
    before = {e.rule: e for e in getattr(old, direction)}
    after = {e.rule: e for e in getattr(new, direction)}
    for name, rule in after.items():
        previous = before.get(name)
        if previous is None:
            said.append(f"{direction} rule {name} added")
        elif previous != rule:
            parts = _moved("", previous.sources, rule.sources, names)
            if previous.destinations != rule.destinations:
                parts += _moved("to ", previous.destinations or (), rule.destinations or (), names)
            if (previous.ports, previous.via) != (rule.ports, rule.via):
                parts.append("ports or via changed")
            said.append(f"{direction} rule {name} updated ({', '.join(parts)})")
    said += [f"{direction} rule {n} removed" for n in sorted(before.keys() - after.keys())]
    return said


def _moved(
    label: str, old: tuple[IPNetwork, ...], new: tuple[IPNetwork, ...], names: Names
) -> list[str]:
    return [f"{label}+{_named(d.network_address, names)}" for d in new if d not in old] + [
        f"{label}-{_named(d.network_address, names)}" for d in old if d not in new
    ]


def _verdict(verdict: Verdict | None) -> str:
    return "accept" if verdict is None else verdict.value


def reach_changes(old: Ruleset, new: Ruleset, host: HostState) -> list[str]:
    """Per published port of each running container: who can reach it after, who no longer."""
    said = []
    for before, after in zip(exposure(old, host), exposure(new, host), strict=True):
        for port_before, port_after in zip(before.ports, after.ports, strict=True):
            was = {a.rule: a for a in port_before.allows}
            now = {a.rule: a for a in port_after.allows}
            where = f"{after.container.name} {port_after.port.host_port}/{port_after.port.proto}"
            gained = [now[r].who() for r in now.keys() - was.keys()]
            lost = [was[r].who() for r in was.keys() - now.keys()]
            if gained:
                said.append(f"{where}: becomes reachable by {', '.join(sorted(gained))}")
            if lost:
                said.append(f"{where}: no longer reachable by {', '.join(sorted(lost))}")
    return said


def _delta(old: Allow, new: Allow, names: Names) -> str:
    parts = []
    if old.destinations is not None and new.destinations is not None:
        parts += [
            f"+{_named(d.network_address, names)}"
            for d in new.destinations
            if d not in old.destinations
        ]
        parts += [
            f"-{_named(d.network_address, names)}"
            for d in old.destinations
            if d not in new.destinations
        ]
    if old.sources != new.sources:
        parts.append(f"from {','.join(old.source_names)} -> {','.join(new.source_names)}")
    if old.ports != new.ports:
        parts.append(f"ports {_ports(old)} -> {_ports(new)}")
    if old.via != new.via:
        parts.append(f"via {old.via or 'any'} -> {new.via or 'any'}")
    return f" ({', '.join(parts)})" if parts else ""


def _named(address: object, names: Names) -> str:
    name = names.get(str(address))
    return f"{name} {address}" if name else str(address)


def _ports(allow: Allow) -> str:
    return "any" if allow.ports is None else ",".join(str(p) for p in allow.ports)
