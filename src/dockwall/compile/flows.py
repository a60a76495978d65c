"""Connections a container opens, for `check`: out of the host (outbound) or to another
container (between), as the packets dockwall's forward chains see. Pure.

SOURCE is a container (its name, or one of its addresses); DEST an outside address, or a
container (name or address). The packet leaves the source's bridge for the interface the
host routes DEST by (outbound), or for DEST's bridge (between).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from dockwall.errors import DockwallError
from dockwall.model.hoststate import Container, HostState
from dockwall.model.packets import Decision, Outcome, Packet
from dockwall.model.policy import Direction, Policy
from dockwall.model.values import Family, IPAddress, Proto


@dataclass(frozen=True)
class Flow:
    source: Container
    source_address: IPAddress
    destination: IPAddress
    target: Container | None  # between: the container dialed; outbound: None
    proto: Proto
    port: int
    in_bridge: str
    out_interface: str

    @property
    def direction(self) -> Direction:
        return Direction.OUTBOUND if self.target is None else Direction.BETWEEN

    def packet(self) -> Packet:
        return Packet(
            self.source_address,
            self.destination,
            self.in_bridge,
            self.out_interface,
            self.proto,
            self.port,
        )


@dataclass(frozen=True)
class FlowVerdict:
    flow: Flow
    decision: Decision
    policy_line: str | None  # "policy.yaml:12" for the deciding rule
    governed: bool  # the direction has a default (else Docker alone decides)


def source_container(host: HostState, source: str) -> Container | None:
    """The running container SOURCE names (by name or address), None if it names none."""
    address = _address(source)
    for container in host.containers:
        if not container.running:
            continue
        if address is None and container.name == source:
            return container
        if address is not None and any(address in (e.ipv4, e.ipv6) for e in container.endpoints):
            return container
    return None


def flows(
    host: HostState,
    source: Container,
    dest: str,
    port: int | None,
    proto: Proto,
    *,
    route: Callable[[IPAddress], str],
) -> list[Flow]:
    """The connections source would open to DEST: one per address family both have.
    route gives the interface the host routes an outside address by."""
    target = _target(host, dest)
    if target is None:
        address = _address(dest)
        if address is None:
            raise DockwallError(f"no running container named {dest!r}")
        if port is None:
            raise DockwallError("a connection out of the host needs --port")
        start = _endpoint(host, source, Family.of(address))
        if start is None:
            raise DockwallError(f"{source.name} has no IPv{address.version} address")
        out = route(address)
        return [Flow(source, start[0], address, None, proto, port, start[1], out)]
    container, asked = target
    ports = [port] if port is not None else sorted(
        {p.container_port for p in container.ports if p.proto is proto}
    )  # fmt: skip
    if not ports:
        raise DockwallError(f"{container.name} publishes no {proto} port: pass --port")
    found = []
    for family in (Family.V4, Family.V6):
        end = _endpoint(host, container, family, asked)
        start = _endpoint(host, source, family, on=None if end is None else end[1])
        if start is None or end is None:
            continue
        found += [Flow(source, start[0], end[0], container, proto, n, start[1], end[1])
                  for n in ports]  # fmt: skip
    if not found:
        raise DockwallError(f"{source.name} and {container.name} share no address family")
    return found


def verdicts(found: list[Flow], decisions: list[Decision], policy: Policy) -> list[FlowVerdict]:
    lines = {r.name: f"{policy.filename}:{r.line}" for r in policy.rules}
    return [
        FlowVerdict(
            f,
            d,
            lines.get(d.policy_rule or ""),
            (policy.outbound if f.direction is Direction.OUTBOUND else policy.between) is not None,
        )
        for f, d in zip(found, decisions, strict=True)
    ]


def text(v: FlowVerdict) -> str:
    """For people: what happens to this flow, and why."""
    d, direction = v.decision, v.flow.direction.value
    if d.outcome is Outcome.NOT_INSTALLED:
        return "dockwall is not installed (or not hooked in): Docker's own rules decide"
    if not v.governed:
        return f"not governed: defaults.{direction} is accept, Docker's own rules decide"
    if d.outcome is Outcome.ALLOWED:
        where = f" ({v.policy_line})" if v.policy_line else ""
        return f"allowed by rule {d.policy_rule}{where}; Docker's own rules decide next"
    return f"{d.outcome.value} by the {direction} default: no rule allows it"


def _target(host: HostState, dest: str) -> tuple[Container, IPAddress | None] | None:
    """The container DEST names, and the address if DEST is one."""
    address = _address(dest)
    found = source_container(host, dest)
    return None if found is None else (found, address)


def _endpoint(
    host: HostState,
    container: Container,
    family: Family,
    address: IPAddress | None = None,
    on: str | None = None,
) -> tuple[IPAddress, str] | None:
    """The container's address of family on a bridge network, and that bridge: the one
    given (if it is the container's), else the one on bridge `on` if there is one, else the
    first."""
    bridges = {n.name: n.bridge for n in host.bridge_networks if n.bridge}
    found = [
        (a, bridges[ep.network])
        for ep in container.endpoints
        for a in (ep.ipv4 if family is Family.V4 else ep.ipv6,)
        if a is not None and ep.network in bridges
    ]
    if address is not None and address.version == (4 if family is Family.V4 else 6):
        return next((x for x in found if x[0] == address), None)
    if address is not None:
        return None  # (DEST is an address of the other family)
    return next((x for x in found if x[1] == on), found[0] if found else None)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
