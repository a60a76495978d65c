"""HostState: what the compiler needs to know about a Docker host, as plain frozen values."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockwall.model.values import Family, IPAddress, IPNetwork, Proto, ProxyCgroup

ANY = {Family.V4: ipaddress.ip_network("0.0.0.0/0"), Family.V6: ipaddress.ip_network("::/0")}


@dataclass(frozen=True)
class Network:
    """A Docker network. Only bridge networks carry governed traffic."""

    id: str
    name: str
    driver: str
    bridge: str | None  # the host interface of a bridge network (validated), else None
    subnets: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    network: str  # network name
    ipv4: IPAddress | None
    ipv6: IPAddress | None


@dataclass(frozen=True)
class PublishedPort:
    host_ip: IPAddress | None  # None: every address of `families`
    host_port: int
    container_port: int
    proto: Proto
    families: frozenset[Family] = frozenset(Family)  # for host_ip None: bound to 0.0.0.0, ::

    def bound(self) -> tuple[IPNetwork, ...]:
        """The host addresses Docker serves this port at: one, or each family's every."""
        if self.host_ip is not None:
            return (ipaddress.ip_network(self.host_ip),)
        return tuple(ANY[f] for f in Family if f in self.families)

    def serves(self, address: IPAddress) -> bool:
        """Whether a connection to address (a host address) on this port reaches it."""
        return any(address in net for net in self.bound())


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    # False: created, not started yet (no address yet, but its port bindings are known, so
    # its host ports are governed on the proxy path before docker-proxy listens on them)
    running: bool = True

    def addresses(self, bridged: frozenset[str]) -> tuple[IPAddress, ...]:
        """The container's addresses on the given (bridge) networks."""
        found: list[IPAddress] = []
        for ep in self.endpoints:
            if ep.network in bridged:
                found += [a for a in (ep.ipv4, ep.ipv6) if a is not None]
        return tuple(found)


@dataclass(frozen=True)
class Quarantined:
    """A Docker object with a value that can't safely become rule text (an odd bridge name, a
    field that doesn't parse or is missing). Nothing of it is written but its addresses, which
    are validated: all outside traffic to them is dropped."""

    kind: str  # "network" or "container"
    name: str  # for people: printable, shortened
    reason: str  # what was wrong, for people
    addresses: tuple[IPNetwork, ...] = ()  # subnets of a network; a container's own addresses
    key: str | None = None  # a network's name as Docker gave it, to find its containers
    bridge: str | None = None  # a network's bridge, if its name is valid (then dropped by name)
    ports: tuple[PublishedPort, ...] = ()  # a container's published ports that do parse
    container_id: str | None = None  # a container's id, where it is one (to read it again)


@dataclass(frozen=True)
class HostState:
    containers: tuple[Container, ...]
    networks: tuple[Network, ...]
    interfaces: frozenset[str]  # host interface names, for warnings about `via`
    docker_version: str = "unknown"
    quarantined: tuple[Quarantined, ...] = ()
    proxy_cgroup: ProxyCgroup | None = None  # None: unknown (remote Docker, root cgroup)

    def names(self) -> dict[str, str]:
        """Container name by address (as text), every network."""
        return {
            str(a): c.name
            for c in self.containers
            for ep in c.endpoints
            for a in (ep.ipv4, ep.ipv6)
            if a is not None
        }

    @property
    def bridge_networks(self) -> tuple[Network, ...]:
        return tuple(n for n in self.networks if n.bridge is not None)
