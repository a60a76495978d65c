"""A packet to explain, and what the firewall decided about it: backend-neutral."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dockwall.model.values import IPAddress, Proto


class Outcome(StrEnum):
    ALLOWED = "allowed"  # RETURNed: handed back to Docker's rules
    DROPPED = "dropped"
    REJECTED = "rejected"
    NOT_GOVERNED = "not governed"  # fell through the entry chain: not outside-to-container
    NOT_INSTALLED = "not installed"  # no dockwall rules in the kernel: Docker's defaults


class Route(StrEnum):
    """The way a connection reaches a container, and the hook dockwall sees it in."""

    FORWARD = "forward"  # DNATed or routed to the container's address: FORWARD
    PROXY = "docker-proxy"  # to a host address, served by docker-proxy: INPUT


@dataclass(frozen=True)
class Packet:
    """The first packet of a new connection, as dockwall's chains see it: in FORWARD, or in
    INPUT on the proxy path (then destination is the host address and out_interface "")."""

    source: IPAddress
    destination: IPAddress  # after Docker's DNAT: the container's address
    in_interface: str
    out_interface: str
    proto: Proto
    dialed_port: int  # before DNAT (conntrack's original destination port)
    route: Route = Route.FORWARD


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    chain: str  # where it was decided
    rule: str  # the line that decided, "" if the packet fell off the end of the entry chain
    policy_rule: str | None  # the policy rule named in that line's comment
