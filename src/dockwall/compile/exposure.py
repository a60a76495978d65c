"""Who may reach which container port, worked out from the Ruleset. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from dockwall.compile.compiler import on_quarantined_network
from dockwall.compile.decide import admits_port, selects
from dockwall.model.hoststate import Container, HostState, PublishedPort
from dockwall.model.packets import Route
from dockwall.model.ruleset import Allow, Egress, Ruleset
from dockwall.model.values import Family, IPAddress


@dataclass(frozen=True)
class PortExposure:
    port: PublishedPort
    allows: tuple[Allow, ...]  # the allows that let someone dial this published port
    # How a client of each family the port is bound in gets there: Docker's NAT (forward)
    # where the container has an address of that family, else docker-proxy (INPUT). The
    # same allows decide both (and after a flush of Docker's NAT, every port is the proxy's).
    paths: tuple[tuple[Family, Route], ...] = ()

    @property
    def public(self) -> bool:
        return any(a.sources is None for a in self.allows)


@dataclass(frozen=True)
class ContainerExposure:
    container: Container
    addresses: tuple[IPAddress, ...]
    ports: tuple[PortExposure, ...]
    quarantined: bool = False  # on a quarantined network: dropped from outside, all of it


def exposure(ruleset: Ruleset, host: HostState) -> tuple[ContainerExposure, ...]:
    bridged = frozenset(n.name for n in host.bridge_networks)
    odd = {c.id for c in on_quarantined_network(host)}
    result = []
    for container in sorted((c for c in host.containers if c.running), key=lambda c: c.name):
        addresses = container.addresses(bridged)
        quarantined = container.id in odd
        allows = () if quarantined else ruleset.allows  # every address and host port: dropped
        ports = tuple(
            PortExposure(
                p, tuple(a for a in allows if _covers(a, addresses, p)), _paths(p, addresses)
            )
            for p in sorted(set(container.ports), key=_port_order)
        )
        result.append(ContainerExposure(container, addresses, ports, quarantined))
    return tuple(result)


def _paths(
    port: PublishedPort, addresses: tuple[IPAddress, ...]
) -> tuple[tuple[Family, Route], ...]:
    bound = {Family.of(net) for net in port.bound()}
    have = {Family.of(a) for a in addresses}
    return tuple((f, Route.FORWARD if f in have else Route.PROXY) for f in Family if f in bound)


def _covers(allow: Allow, addresses: tuple[IPAddress, ...], port: PublishedPort) -> bool:
    """The allow selects the container and takes the port as dialed (the host port): the
    same predicates decide.py judges packets by. Who it lets in (sources, via) is listed."""
    return selects(allow, addresses) and admits_port(allow, port.proto, port.host_port)


def _port_order(port: PublishedPort) -> tuple[int, str, str]:
    return (port.host_port, port.proto.value, str(port.host_ip or ""))


@dataclass(frozen=True)
class ContainerEgress:
    """What a container may open, per direction: the rules that let it (none: only what
    they allow is let through, nothing here means nothing); None where the direction has
    no default (not governed: Docker's rules alone decide)."""

    container: Container
    outbound: tuple[Egress, ...] | None
    between: tuple[Egress, ...] | None


def egress(ruleset: Ruleset, host: HostState) -> tuple[ContainerEgress, ...]:
    """Per running container, the outbound and between rules whose containers include it:
    the same test (its address among the rule's sources) decide.py judges packets by."""
    if ruleset.outbound_default is None and ruleset.between_default is None:
        return ()
    bridged = frozenset(n.name for n in host.bridge_networks)
    result = []
    for container in sorted((c for c in host.containers if c.running), key=lambda c: c.name):
        addresses = container.addresses(bridged)

        def mine(
            rules: tuple[Egress, ...], addresses: tuple[IPAddress, ...] = addresses
        ) -> tuple[Egress, ...]:
            return tuple(e for e in rules if any(a in n for a in addresses for n in e.sources))

        outbound = None if ruleset.outbound_default is None else mine(ruleset.outbound)
        between = None if ruleset.between_default is None else mine(ruleset.between)
        result.append(ContainerEgress(container, outbound, between))
    return tuple(result)
