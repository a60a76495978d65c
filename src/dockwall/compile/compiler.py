"""compile(policy, host) -> Ruleset: pure. No I/O, no Docker calls, no clock."""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from dockwall.model.hoststate import Container, HostState, PublishedPort, Quarantined
from dockwall.model.policy import Direction, Policy, Rule, Selector
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset
from dockwall.model.values import IPNetwork, PortRange, ProxyCgroup

DEFAULT_BRIDGE_PREFIXES = ("br-",)  # Docker's names for user-defined bridges made later
DEFAULT_BRIDGES = ("docker0",)  # governed even before Docker is seen (fail closed)
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(frozen=True)
class Part:
    """What one policy rule compiled to on a host, and its warnings."""

    made: Allow | Egress
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Compiled:
    ruleset: Ruleset
    warnings: tuple[str, ...]
    # per policy rule, in order: what incremental.recompile may reuse
    parts: tuple[Part, ...] = field(default=(), compare=False)
    # how many containers publish each of the ruleset's listeners (recompile's count)
    listened: Counter[Listener] = field(default_factory=Counter, compare=False)


def compile_policy(policy: Policy, host: HostState) -> Compiled:
    bridged = frozenset(n.name for n in host.bridge_networks)
    return assemble(policy, host, tuple(rule_part(r, host, bridged) for r in policy.rules))


def rule_part(rule: Rule, host: HostState, bridged: frozenset[str]) -> Part:
    """One rule on host (bridged: the names of its bridge networks)."""
    warnings: list[str] = []
    made: Allow | Egress
    if rule.direction is Direction.INBOUND:
        made = _allow(rule, host, bridged, warnings)
    elif rule.direction is Direction.OUTBOUND:
        made = _egress(rule, host, bridged, warnings, rule.remote)
    else:
        made = _egress(rule, host, bridged, warnings, _to(rule, host, bridged))
    if rule.via is not None and rule.via not in host.interfaces:
        warnings.append(f"rule {rule.name!r}: via {rule.via!r} names no interface on this host")
    return Part(made, tuple(warnings))


def assemble(
    policy: Policy,
    host: HostState,
    parts: tuple[Part, ...],
    listened: tuple[Counter[Listener], tuple[Listener, ...]] | None = None,
) -> Compiled:
    """The Ruleset of the rules' parts (policy order) and of what is host-wide. listened:
    the count of containers per listener and the listeners in order, where the caller kept
    them (else they are counted from every container)."""
    counts, listeners = listened if listened is not None else _listened(host.containers)
    directions = [r.direction for r in policy.rules]
    allows = [p.made for p, d in zip(parts, directions, strict=True) if d is Direction.INBOUND]
    outbound = [p.made for p, d in zip(parts, directions, strict=True) if d is Direction.OUTBOUND]
    between = [p.made for p, d in zip(parts, directions, strict=True) if d is Direction.BETWEEN]
    warnings = [w for p in parts for w in p.warnings]
    bridges = tuple(
        sorted({n.bridge for n in host.bridge_networks if n.bridge} | set(DEFAULT_BRIDGES))
    )
    inbound = [r for r in policy.rules if r.direction is Direction.INBOUND]
    log_default = policy.log or any(r.log and r.targets is None for r in inbound)
    quarantine = quarantined_addresses(host)
    q_bridges = tuple(sorted({q.bridge for q in host.quarantined if q.bridge} - set(bridges)))
    warnings += [quarantine_warning(q) for q in host.quarantined]
    ruleset = Ruleset(
        bridges,
        DEFAULT_BRIDGE_PREFIXES,
        tuple(a for a in allows if isinstance(a, Allow)),
        policy.default,
        log_default,
        policy.log_rate,
        quarantine,
        q_bridges,
        listeners,
        quarantined_listeners(host),
        host.proxy_cgroup,
        tuple(e for e in outbound if isinstance(e, Egress)),
        policy.outbound,
        tuple(e for e in between if isinstance(e, Egress)),
        policy.between,
    )
    return Compiled(ruleset, tuple(warnings), parts, counts)


def _listened(containers: tuple[Container, ...]) -> tuple[Counter[Listener], tuple[Listener, ...]]:
    counts: Counter[Listener] = Counter(x for c in containers for x in container_listeners(c))
    return counts, ordered(counts)


def container_listeners(container: Container) -> set[Listener]:
    return {Listener(p.proto, p.host_port, net) for p in container.ports for net in p.bound()}


def ordered(counts: Counter[Listener]) -> tuple[Listener, ...]:
    """The listeners some container publishes, in the Ruleset's order (as listening)."""
    return tuple(sorted((x for x, n in counts.items() if n > 0), key=_listener_order))


def closed(
    policy: Policy, listeners: tuple[Listener, ...], proxy_cgroup: ProxyCgroup | None = None
) -> Ruleset:
    """The policy for a host whose containers can't be known (Docker away or not seen yet):
    no container is selected, so only rules for every container let anyone in, and the host
    ports last known to be published stay governed on the proxy path (a Docker starting
    again starts docker-proxy for its containers before it answers), as do the others
    docker-proxy starts in dockerd's cgroup (the same again after a restart by systemd)."""
    empty = HostState((), (), frozenset(), proxy_cgroup=proxy_cgroup)
    return replace(compile_policy(policy, empty).ruleset, listeners=listeners)


def on_quarantined_network(host: HostState) -> tuple[Container, ...]:
    """The containers with an endpoint on a quarantined network: quarantined whole (every
    address on every network, every host port), so that which of its networks Docker
    publishes a port through (or docker-proxy connects to) does not matter."""
    keys = {q.key for q in host.quarantined if q.kind == "network" and q.key is not None}
    if not keys:
        return ()
    return tuple(c for c in host.containers if any(ep.network in keys for ep in c.endpoints))


def quarantined_addresses(host: HostState) -> tuple[IPNetwork, ...]:
    """The addresses of every quarantined object, and every address of a container on a
    quarantined network: all outside traffic to them is dropped. Collapsed, in order."""
    found = {a for q in host.quarantined for a in q.addresses}
    for container in on_quarantined_network(host):
        for ep in container.endpoints:
            found |= {_host_net(a) for a in (ep.ipv4, ep.ipv6) if a is not None}
    v4 = [n for n in found if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def quarantined_listeners(host: HostState) -> tuple[Listener, ...]:
    """The host ports of quarantined containers (those of a container quarantined for its own
    values that parse, and every one of a container on a quarantined network): all outside
    traffic to them on docker-proxy's path is dropped, before any rule is tried."""
    ports = [p for q in host.quarantined for p in q.ports]
    return _listeners(ports + [p for c in on_quarantined_network(host) for p in c.ports])


def quarantine_warning(q: Quarantined) -> str:
    """For people: which object, what was wrong, and what dockwall does about it."""
    by = [str(a) for a in q.addresses] + ([f"bridge {q.bridge}"] if q.bridge else [])
    by += [f"host port {p.host_port}/{p.proto.value}" for p in q.ports]
    if q.kind == "network":
        by.append("its containers' addresses and host ports")
    done = (
        f"all outside traffic to {', '.join(by)} is dropped"
        if by
        else "no address known: no rule selects it (only rules for every container apply)"
    )
    return f"{q.kind} {q.name!r} quarantined ({q.reason}): {done}"


def _allow(rule: Rule, host: HostState, bridged: frozenset[str], warnings: list[str]) -> Allow:
    destinations, listeners = None, None
    ports = None if rule.ports is None else tuple(sorted(set(rule.ports)))
    if rule.targets is not None:
        matched = matching_containers(rule, host)
        if not matched:
            warnings.append(f"rule {rule.name!r}: to matches no running container now")
        addresses = {a for c in matched for a in c.addresses(bridged)}
        destinations = tuple(_host_net(a) for a in sorted(addresses, key=_order))
        listeners = tuple(x for x in listening(matched) if _dialed(x, ports))
    sources = rule.sources  # already canonical (policy.canonical), shared by every compile
    return Allow(
        rule.name,
        rule.line,
        rule.source_names,
        rule.via,
        sources,
        destinations,
        ports,
        rule.log,
        listeners,
    )


def _egress(
    rule: Rule,
    host: HostState,
    bridged: frozenset[str],
    warnings: list[str],
    destinations: tuple[IPNetwork, ...] | None,
) -> Egress:
    """An outbound (destinations: the rule's addresses) or between (the addresses of the
    containers its to selects) rule, from the addresses of the containers its from selects."""
    origins = tuple(c for c in host.containers if any(selects(s, c) for s in rule.origins))
    if not origins:
        warnings.append(f"rule {rule.name!r}: from matches no running container now")
    ports = None if rule.ports is None else tuple(sorted(set(rule.ports)))
    sources = _addresses(origins, bridged)
    return Egress(
        rule.name,
        rule.line,
        rule.source_names,
        sources,
        destinations,
        ports,
        rule.via,
        rule.log,
        rule.direction is Direction.BETWEEN,
    )


def _to(rule: Rule, host: HostState, bridged: frozenset[str]) -> tuple[IPNetwork, ...] | None:
    """A between rule's destinations: the addresses of the containers its to selects (None
    for '*', every container)."""
    if rule.targets is None:
        return None
    return _addresses(matching_containers(rule, host), bridged)


def _addresses(containers: tuple[Container, ...], bridged: frozenset[str]) -> tuple[IPNetwork, ...]:
    """The containers' addresses on bridge networks, in order."""
    found = {a for c in containers for a in c.addresses(bridged)}
    return tuple(_host_net(a) for a in sorted(found, key=_order))


def listening(containers: tuple[Container, ...]) -> tuple[Listener, ...]:
    """The host ports at which these containers are published (docker-proxy's path)."""
    return _listeners(p for c in containers for p in c.ports)


def _listeners(ports: Iterable[PublishedPort]) -> tuple[Listener, ...]:
    found = {Listener(p.proto, p.host_port, net) for p in ports for net in p.bound()}
    return tuple(sorted(found, key=_listener_order))


def _dialed(listener: Listener, ports: tuple[PortRange, ...] | None) -> bool:
    return ports is None or any(r.proto is listener.proto and listener.port in r for r in ports)


def _listener_order(x: Listener) -> tuple[int, object, int, str]:
    return (x.address.version, x.address, x.port, x.proto.value)


def matching_containers(rule: Rule, host: HostState) -> tuple[Container, ...]:
    """Containers a rule's `to` selects (all of them for "*")."""
    if rule.targets is None:
        return host.containers
    if len(rule.targets) == 1:  # the common case, without a generator per container
        (only,) = rule.targets
        return tuple(c for c in host.containers if selects(only, c))
    return tuple(c for c in host.containers if any(selects(s, c) for s in rule.targets))


def selects(selector: Selector, container: Container) -> bool:
    """True if every key set in the selector matches the container (and one is set). Checked
    for every rule and container on every compile, so it returns at the first miss."""
    chosen = False
    if selector.label is not None:
        key, value = selector.label
        if key not in container.labels or value not in (None, container.labels[key]):
            return False
        chosen = True
    if selector.container is not None:
        if not fnmatchcase(container.name, selector.container):
            return False
        chosen = True
    if selector.network is not None:
        if all(ep.network != selector.network for ep in container.endpoints):
            return False
        chosen = True
    if selector.compose is not None:
        return _composed(selector.compose, container.labels)
    return chosen


def _composed(compose: tuple[str | None, str], labels: Mapping[str, str]) -> bool:
    project, service = compose
    return labels.get(COMPOSE_SERVICE) == service and project in (None, labels.get(COMPOSE_PROJECT))


@functools.lru_cache(maxsize=65536)  # the same objects every compile: cheap to compare
def _host_net(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    return ipaddress.ip_network(addr)


def _order(item: IPNetwork | ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, object]:
    return (item.version, item)
