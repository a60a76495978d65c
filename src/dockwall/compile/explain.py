"""Why a connection is allowed or not: destinations resolved against the host, packets
followed through the installed chains, and what Docker does next. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from dockwall.errors import DockwallError
from dockwall.model.hoststate import Container, HostState, PublishedPort
from dockwall.model.packets import Decision, Outcome, Packet, Route
from dockwall.model.policy import Policy
from dockwall.model.values import Family, IPAddress, Proto


class NotGoverned(DockwallError):
    """The connection asked about is not outside-to-container: dockwall has no say in it."""


DIRECT_DROPPED_FROM = 28  # Docker 28 and 29 drop traffic routed straight at container addresses
NFT_TABLE = {Family.V4: "ip docker-bridges", Family.V6: "ip6 docker-bridges"}


@dataclass(frozen=True)
class Target:
    """One way a connection can reach a container."""

    container: Container
    address: IPAddress  # the container's address (after DNAT)
    bridge: str
    proto: Proto
    dialed_port: int
    container_port: int
    published: bool  # dialed at a host address (DNAT) rather than at the container's own
    # FORWARD: DNATed to the container's address; PROXY: Docker has no NAT for this family
    # (no container address in it), so docker-proxy takes it, through INPUT: `address` and
    # `bridge` are then the host address dialed (unspecified: any) and "".
    route: Route = Route.FORWARD


@dataclass(frozen=True)
class Verdict:
    target: Target
    decision: Decision
    policy_line: str | None  # "policy.yaml:15" for the deciding policy rule
    docker_next: str  # what Docker does with it after dockwall, for allowed traffic


def targets(
    host: HostState, dest: str, family: Family, port: int | None, proto: Proto, *, nat: bool = True
) -> list[Target]:
    """The ways DEST (a container name or address, or a host address) can be reached. nat:
    Docker's NAT for published ports is in the kernel for this family (else docker-proxy
    takes every published port, through INPUT)."""
    address = _address(dest)
    if address is None:
        found = [c for c in host.containers if c.name == dest and c.running]
        if not found:
            raise DockwallError(f"no running container named {dest!r}")
        return sorted(
            (t for c in found for t in _by_name(host, c, family, port, proto, nat=nat)), key=_order
        )
    owner = _owner(host, address)
    if owner is not None:
        return _direct(host, owner, address, port, proto)
    return sorted(_published_at(host, address, family, port, proto, nat=nat), key=_order)


def _order(target: Target) -> tuple[str, int]:
    return target.container.name, target.dialed_port


def check_source(host: HostState, source: IPAddress) -> None:
    """This explains connections from outside; one a container opens is flows.py's."""
    owner = _owner(host, source)
    if owner is not None:
        raise NotGoverned(
            f"{source} is container {owner.name}: connections it opens are outbound or "
            "between containers (compile/flows.py, `dockwall check CONTAINER DEST`)"
        )


def packets(found: list[Target], source: IPAddress, via: str) -> list[Packet]:
    return [
        Packet(source, t.address, via, t.bridge, t.proto, t.dialed_port, t.route) for t in found
    ]


def verdicts(
    found: list[Target],
    decisions: list[Decision],
    policy: Policy,
    engine: str,
    firewall: str = "iptables",
) -> list[Verdict]:
    """firewall: Docker's own firewall backend (its /info), whose rules decide next."""
    lines = {r.name: f"{policy.filename}:{r.line}" for r in policy.rules}
    nft = firewall.split("+", 1)[0] == "nftables"
    return [
        Verdict(t, d, lines.get(d.policy_rule or ""), _docker_next(t, d, engine, nft))
        for t, d in zip(found, decisions, strict=True)
    ]


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _bridges(host: HostState) -> dict[str, str]:
    return {n.name: n.bridge for n in host.bridge_networks if n.bridge}


def _endpoints(
    host: HostState, container: Container, family: Family
) -> list[tuple[IPAddress, str]]:
    bridges = _bridges(host)
    found = []
    for ep in container.endpoints:
        address = ep.ipv4 if family is Family.V4 else ep.ipv6
        if address is not None and ep.network in bridges:
            found.append((address, bridges[ep.network]))
    return found


def _owner(host: HostState, address: IPAddress) -> Container | None:
    for container in host.containers:
        for ep in container.endpoints:
            if address in (ep.ipv4, ep.ipv6):
                return container
    return None


def _by_name(
    host: HostState,
    container: Container,
    family: Family,
    port: int | None,
    proto: Proto,
    *,
    nat: bool = True,
) -> list[Target]:
    published = [p for p in container.ports if p.proto is proto and port in (None, p.host_port)]
    endpoints = _endpoints(host, container, family)[:1]
    if published or port is None:
        if not (endpoints and nat):  # no address in this family, or no NAT: docker-proxy
            return [_proxied(container, p, bound.network_address) for p, bound in
                    _bindings(published, family)]  # fmt: skip
        return [
            Target(container, address, bridge, proto, p.host_port, p.container_port, True)
            for address, bridge in endpoints
            for p in _unique(published)
        ]
    return [Target(container, a, b, proto, port, port, False) for a, b in endpoints]


def _bindings(
    ports: Iterable[PublishedPort], family: Family
) -> list[tuple[PublishedPort, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """Each port with the addresses of this family it is bound to."""
    version = 4 if family is Family.V4 else 6
    return [(p, net) for p in ports for net in p.bound() if net.version == version]


def _proxied(container: Container, p: PublishedPort, address: IPAddress) -> Target:
    return Target(container, address, "", p.proto, p.host_port, p.container_port, True, Route.PROXY)


def _direct(
    host: HostState, container: Container, address: IPAddress, port: int | None, proto: Proto
) -> list[Target]:
    bridge = next(
        (b for a, b in _endpoints(host, container, Family.of(address)) if a == address), None
    )
    if bridge is None:
        raise DockwallError(f"{address} is not on a Docker bridge network: not governed")
    ports = (
        [port]
        if port is not None
        else sorted({p.container_port for p in container.ports if p.proto is proto})
    )
    return [Target(container, address, bridge, proto, n, n, False) for n in ports]


def _published_at(
    host: HostState,
    address: IPAddress,
    family: Family,
    port: int | None,
    proto: Proto,
    *,
    nat: bool = True,
) -> list[Target]:
    found = []
    for container in host.containers:
        for p in _unique(container.ports):
            if p.proto is proto and port in (None, p.host_port) and p.serves(address):
                endpoints = _endpoints(host, container, family)[:1] if nat else []
                found += [
                    Target(container, a, b, proto, p.host_port, p.container_port, True)
                    for a, b in endpoints
                ] or [_proxied(container, p, address)]
    if not found:
        what = f"port {port}/{proto}" if port else "any port"
        raise NotGoverned(
            f"no container is published on {what} at {address} (traffic to the "
            "host itself goes through INPUT)"
        )
    return found


def _unique(ports: Iterable[PublishedPort]) -> list[PublishedPort]:
    """One per (host port, container port, protocol, bound address)."""
    return list({(p.host_port, p.container_port, p.proto, p.host_ip): p for p in ports}.values())


def _docker_next(target: Target, decision: Decision, engine: str, nft: bool) -> str:
    """What Docker's own rules do after dockwall's allow. Docker 28 and 29 (iptables): DNAT
    in nat PREROUTING, then DOCKER-FORWARD/DOCKER-BRIDGE/DOCKER accept published ports (no
    DOCKER-ISOLATION-* chains in 29), raw PREROUTING drops direct routing (gateway mode nat).
    Docker 29's nftables backend: the same in table ip/ip6 docker-bridges, chains
    nat-prerouting-and-output, filter-forward-in__<bridge> (accepts published ports, then
    "UNPUBLISHED PORT DROP") and raw-PREROUTING ("DROP DIRECT ACCESS")."""
    if decision.outcome is not Outcome.ALLOWED:
        return ""
    where = f"{target.container.name}:{target.container_port}/{target.proto}"
    if target.route is Route.PROXY:
        return f"docker-proxy forwards it to {where}"
    table = NFT_TABLE[Family.of(target.address)]
    if target.published:
        how = f" (nftables: {table}, chain filter-forward-in__{target.bridge})" if nft else ""
        return f"Docker forwards it to {where}{how}"
    head = engine.split(".", maxsplit=1)[0]
    major = int(head) if head.isdigit() else 0
    if major >= DIRECT_DROPPED_FROM or nft:
        how = f"nftables: {table}, chain raw-PREROUTING" if nft else "raw PREROUTING"
        return f"Docker {engine} drops traffic routed straight at container addresses ({how})"
    if any(
        p.container_port == target.container_port and p.proto is target.proto
        for p in target.container.ports
    ):
        return f"Docker forwards it to {where} (a published container port)"
    return f"Docker drops it: {where} is not published"
