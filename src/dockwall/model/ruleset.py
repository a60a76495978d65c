"""The Ruleset: what the kernel must do, in backend-neutral terms. No iptables or nft syntax."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dockwall.model.values import (
    DEFAULT_LOG_RATE,
    Family,
    IPNetwork,
    LogRate,
    PortRange,
    Proto,
    ProxyCgroup,
    Verdict,
)


@dataclass(frozen=True, order=True)
class Listener:
    """A host port Docker publishes, as docker-proxy serves it through the host's INPUT hook:
    connections to `address` (a host address; 0.0.0.0/0 or ::/0 for every one of a family)
    on `port`. The port is the one the client dialed: no NAT happens on that path."""

    proto: Proto
    port: int
    address: IPNetwork

    @property
    def family(self) -> Family:
        return Family.of(self.address)


@dataclass(frozen=True)
class Allow:
    """One policy rule made concrete: traffic matching all of these is handed back to Docker."""

    rule: str  # the policy rule's name
    line: int  # where it is in the policy file
    source_names: tuple[str, ...]  # sources as the policy wrote them, for people
    via: str | None  # arriving interface; None: any
    sources: tuple[IPNetwork, ...] | None  # None: any source
    destinations: tuple[IPNetwork, ...] | None  # container addresses; None: every container
    ports: tuple[PortRange, ...] | None  # dialed ports; None: any port
    log: bool = False  # log what is dropped on its way to this allow's destinations
    # The host ports of its destinations (within `ports`), for the proxy path; None: every
    # governed listener (an allow for every container), subject to `ports`.
    listeners: tuple[Listener, ...] | None = None

    def who(self) -> str:
        """For people: 'public-web (anyone via eth0)', 'admins (admins via eth0)'."""
        sources = "anyone" if self.sources is None else ",".join(self.source_names)
        via = f" via {self.via}" if self.via else ""
        return f"{self.rule} ({sources}{via})"

    def in_family(self, family: Family) -> Allow | None:
        """This allow narrowed to one address family, or None where its sources leave
        nothing there. The containers it selects may be none there for now: the allow stays
        (matching nothing), so a container coming or going changes set elements, not rules."""
        sources = _only(self.sources, family)
        destinations = _only(self.destinations, family)
        listeners = _listening(self.listeners, family)
        if sources == ():
            return None
        return replace(self, sources=sources, destinations=destinations, listeners=listeners)


@dataclass(frozen=True)
class Egress:
    """One outbound or between rule made concrete: connections from these containers'
    addresses to these destinations, on these ports, are handed back to Docker."""

    rule: str
    line: int
    source_names: tuple[str, ...]  # the containers as the policy selected them, for people
    sources: tuple[IPNetwork, ...]  # the selected containers' addresses (none: matches nothing)
    # outbound: addresses outside the host; between: container addresses; None: any
    destinations: tuple[IPNetwork, ...] | None
    ports: tuple[PortRange, ...] | None  # the destination port the packet carries; None: any
    via: str | None = None  # outbound: the host interface it leaves by; None: any
    log: bool = False  # log what this rule's containers send that is dropped
    to_containers: bool = False  # between: destinations are container addresses

    def in_family(self, family: Family) -> Egress | None:
        """Narrowed to one family; None where its own addresses (outbound) leave nothing
        there. Container addresses may be none for now: the rule stays (matching nothing),
        so a container coming or going changes set elements, not rules."""
        sources = _only(self.sources, family) or ()
        destinations = _only(self.destinations, family)
        if destinations == () and not self.to_containers:
            return None
        return replace(self, sources=sources, destinations=destinations)


@dataclass(frozen=True)
class Ruleset:
    """Governed traffic arrives on a non-bridge interface (not loopback) and either leaves on
    a Docker bridge (the forward path) or is addressed to the host at a port Docker publishes
    (`listeners`: the proxy path, docker-proxy's through INPUT). The same allows decide both.

    Replies and traffic that containers start are never governed. Governed traffic that no
    allow matches gets `default`. Traffic from outside to a quarantined address or bridge (a
    Docker object with values unsafe to write) gets `default` before any allow, whatever
    interface it leaves on, and so does traffic to a quarantined container's host port
    (`quarantine_listeners`) on the proxy path.
    """

    bridges: tuple[str, ...]  # bridge interfaces known now
    bridge_prefixes: tuple[str, ...]  # also bridges: names starting with these (later networks)
    allows: tuple[Allow, ...]
    default: Verdict
    log_default: bool = False  # log every default drop
    log_rate: LogRate = DEFAULT_LOG_RATE
    quarantine: tuple[IPNetwork, ...] = ()  # addresses of quarantined networks and containers
    quarantine_bridges: tuple[str, ...] = ()  # bridges of quarantined networks (valid names)
    listeners: tuple[Listener, ...] = ()  # every published host port (the proxy path)
    # the host ports of quarantined containers (their own, or on a quarantined network)
    quarantine_listeners: tuple[Listener, ...] = ()
    # where docker-proxy's sockets live: a listener there not in `listeners` (a container
    # being started, not seen yet) gets `default`, where the backend can match it (nftables)
    proxy_cgroup: ProxyCgroup | None = None
    # Traffic containers start (from a bridge): to a non-bridge interface (outbound), or to a
    # bridge (between containers, on one network or across). A direction whose default is
    # None is not governed (Docker's rules decide); else what no rule of it allows gets it.
    outbound: tuple[Egress, ...] = ()
    outbound_default: Verdict | None = None
    between: tuple[Egress, ...] = ()
    between_default: Verdict | None = None

    def in_family(self, family: Family) -> Ruleset:
        allows = (a.in_family(family) for a in self.allows)
        quarantine = _only(self.quarantine, family) or ()
        outbound = (e.in_family(family) for e in self.outbound)
        between = (e.in_family(family) for e in self.between)
        return replace(
            self,
            allows=tuple(a for a in allows if a is not None),
            outbound=tuple(e for e in outbound if e is not None),
            between=tuple(e for e in between if e is not None),
            quarantine=quarantine,
            listeners=_listening(self.listeners, family) or (),
            quarantine_listeners=_listening(self.quarantine_listeners, family) or (),
        )


def in_order(allows: tuple[Allow, ...]) -> list[Allow]:
    """The order allows are tried in: those for every container first, then the rest, each
    in policy order. The iptables backend's chains can only try them so (the allows for every
    container come before the dispatch to a destination's class chain), and the nftables
    table and decide.py follow it, so all count a packet under the same rule."""
    return [a for a in allows if a.destinations is None] + [
        a for a in allows if a.destinations is not None
    ]


def destination_changes(before: Ruleset, after: Ruleset) -> list[tuple[Allow, Allow]] | None:
    """The allows (before, after) that differ, where nothing else differs but some allows'
    destinations (containers came, went or moved); None where anything else does. Both
    backends update only what these allows touch instead of rendering everything."""
    if before is after:
        return []
    if len(before.allows) != len(after.allows):
        return None
    if replace(before, allows=()) != replace(after, allows=()):
        return None
    pairs = zip(before.allows, after.allows, strict=True)
    changed = [(old, new) for old, new in pairs if old is not new and old != new]
    if any(replace(old, destinations=new.destinations) != new for old, new in changed):
        return None
    return changed


def _listening(
    listeners: tuple[Listener, ...] | None, family: Family
) -> tuple[Listener, ...] | None:
    if listeners is None:
        return None
    return tuple(x for x in listeners if x.family is family)


def _only(nets: tuple[IPNetwork, ...] | None, family: Family) -> tuple[IPNetwork, ...] | None:
    if nets is None:
        return None
    version = 4 if family is Family.V4 else 6
    return tuple(n for n in nets if n.version == version)
