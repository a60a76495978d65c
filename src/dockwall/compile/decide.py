"""What a Ruleset does with one packet, and why: the one meaning of an allow. Pure.

Both backends render this meaning; nothing else decides it. `check` answers from here on
both (each backend only names the line of its rendering and compares the kernel with it),
`status` asks which allows let someone reach a published port (exposure.py), and a rule
walker over the iptables rendering (tests/oracles/iptables_walk.py) is held to it by a
property test over random Rulesets and packets.

The forward path (FORWARD, after Docker's DNAT), in this order:
    from a bridge (traffic containers start): out on another bridge or the same (between
    containers), else outbound; a direction with no default (accept) is not judged
    (allowed); else, between, to a quarantined address: that default; the first rule of the
    direction whose containers, destinations and ports match: allowed; else its default
    to a quarantined address, then out on a quarantined bridge: the default
    not out on a bridge: not governed
    the first allow that matches (see ruleset.in_order): allowed
    else the default, logged under the first allow that logs and names the destination
The proxy path (INPUT, docker-proxy's: a host address, the port as dialed):
    from loopback or a bridge: allowed, not judged
    to a quarantined container's host port: the default
    not to a host port Docker publishes (a listener): not governed
    the first allow that matches there (see proxy_matches): allowed, else the default
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from dockwall.model.packets import Outcome, Packet, Route
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset, in_order
from dockwall.model.values import Family, IPAddress, Proto, Verdict


class Step(StrEnum):
    """What decided a packet."""

    FROM_BRIDGE = "from a bridge"  # traffic containers start: handed to Docker
    LOOPBACK = "from loopback"  # the proxy path: the host itself
    QUARANTINED_ADDRESS = "to a quarantined address"  # the default, before any allow
    QUARANTINED_BRIDGE = "out on a quarantined bridge"  # the same
    QUARANTINED_LISTENER = "to a quarantined container's host port"  # the proxy path's same
    NOT_TO_BRIDGE = "not to a bridge"  # the forward path: not governed
    NOT_LISTENED = "not to a published host port"  # the proxy path: not governed
    ALLOW = "allowed by a rule"
    DEFAULT = "the default verdict"  # no allow matched
    OUTBOUND_ALLOW = "allowed out by a rule"  # from a container to outside the host
    OUTBOUND_DEFAULT = "the outbound default"  # no outbound rule matched
    BETWEEN_ALLOW = "allowed between containers by a rule"
    BETWEEN_DEFAULT = "the between default"  # no between rule matched


@dataclass(frozen=True)
class Ruling:
    """The outcome for one packet and the step that gave it."""

    outcome: Outcome  # never NOT_INSTALLED: that is the kernel's state, not the Ruleset's
    step: Step
    allow: Allow | None = None  # ALLOW: the allow that matched (narrowed to the family)
    # DEFAULT on the forward path: the first allow (policy order) that logs and names the
    # destination; the drop is logged under its name, not as the default's.
    logged_by: Allow | None = None
    egress: Egress | None = None  # OUTBOUND_ALLOW, BETWEEN_ALLOW: the rule that matched
    between: bool = False  # from a container out on a bridge (to a container)

    @property
    def policy_rule(self) -> str | None:
        if self.egress is not None:
            return self.egress.rule
        return None if self.allow is None else self.allow.rule


def decide(ruleset: Ruleset, packet: Packet) -> Ruling:
    """What ruleset does with packet (the first packet of a new connection)."""
    if packet.route is Route.PROXY:
        return _proxy(ruleset, packet)
    return _forward(ruleset, packet)


def _forward(ruleset: Ruleset, packet: Packet) -> Ruling:
    if is_bridge(ruleset, packet.in_interface):
        return _from_container(ruleset, packet)
    turned_away = default_outcome(ruleset)
    if any(packet.destination in net for net in ruleset.quarantine):
        return Ruling(turned_away, Step.QUARANTINED_ADDRESS)
    if packet.out_interface in ruleset.quarantine_bridges:
        return Ruling(turned_away, Step.QUARANTINED_BRIDGE)
    if not is_bridge(ruleset, packet.out_interface):
        return Ruling(Outcome.NOT_GOVERNED, Step.NOT_TO_BRIDGE)
    allows = ruleset.in_family(Family.of(packet.source)).allows
    allow = next((a for a in in_order(allows) if matches(a, packet)), None)
    if allow is not None:
        return Ruling(Outcome.ALLOWED, Step.ALLOW, allow)
    logger = next((a for a in allows if a.log and a.destinations and _to(a, packet)), None)
    return Ruling(turned_away, Step.DEFAULT, logged_by=logger)


def _from_container(ruleset: Ruleset, packet: Packet) -> Ruling:
    """Traffic a container starts: between containers where it leaves on a bridge, else
    outbound; judged only where that direction has a default."""
    between = is_bridge(ruleset, packet.out_interface)
    default = ruleset.between_default if between else ruleset.outbound_default
    if default is None:
        return Ruling(Outcome.ALLOWED, Step.FROM_BRIDGE, between=between)
    turned_away = outcome_of(default)
    if between and any(packet.destination in net for net in ruleset.quarantine):
        return Ruling(turned_away, Step.QUARANTINED_ADDRESS, between=True)
    narrowed = ruleset.in_family(Family.of(packet.source))
    rules = narrowed.between if between else narrowed.outbound
    found = next((e for e in rules if egress_matches(e, packet)), None)
    if found is not None:
        step = Step.BETWEEN_ALLOW if between else Step.OUTBOUND_ALLOW
        return Ruling(Outcome.ALLOWED, step, egress=found, between=between)
    step = Step.BETWEEN_DEFAULT if between else Step.OUTBOUND_DEFAULT
    return Ruling(turned_away, step, between=between)


def egress_matches(rule: Egress, packet: Packet) -> bool:
    """From one of the rule's containers, to one of its destinations (any where None), on one
    of its ports (the port dialed), leaving by its interface (outbound)."""
    return (
        any(packet.source in net for net in rule.sources)
        and (rule.destinations is None or any(packet.destination in n for n in rule.destinations))
        and (rule.ports is None or any(
            r.proto is packet.proto and packet.dialed_port in r for r in rule.ports
        ))
        and (rule.via is None or rule.via == packet.out_interface)
    )  # fmt: skip


def _proxy(ruleset: Ruleset, packet: Packet) -> Ruling:
    if packet.in_interface == "lo":
        return Ruling(Outcome.ALLOWED, Step.LOOPBACK)
    if is_bridge(ruleset, packet.in_interface):
        return Ruling(Outcome.ALLOWED, Step.FROM_BRIDGE)
    narrowed = ruleset.in_family(Family.of(packet.source))
    if listened(narrowed.quarantine_listeners, packet):
        return Ruling(default_outcome(ruleset), Step.QUARANTINED_LISTENER)
    if not listened(narrowed.listeners, packet):
        return Ruling(Outcome.NOT_GOVERNED, Step.NOT_LISTENED)
    allow = next((a for a in in_order(narrowed.allows) if proxy_matches(a, packet)), None)
    if allow is not None:
        return Ruling(Outcome.ALLOWED, Step.ALLOW, allow)
    return Ruling(default_outcome(ruleset), Step.DEFAULT)


def default_outcome(ruleset: Ruleset) -> Outcome:
    return outcome_of(ruleset.default)


def outcome_of(verdict: Verdict) -> Outcome:
    return Outcome.DROPPED if verdict is Verdict.DROP else Outcome.REJECTED


def is_bridge(ruleset: Ruleset, name: str) -> bool:
    """A Docker bridge known now, or one named like those of networks made later."""
    return name in ruleset.bridges or any(name.startswith(p) for p in ruleset.bridge_prefixes)


def matches(allow: Allow, packet: Packet) -> bool:
    """The forward path: the allow's interface, sources, destinations and dialed ports."""
    return (
        comes_from(allow, packet)
        and _to(allow, packet)
        and admits_port(allow, packet.proto, packet.dialed_port)
    )


def proxy_matches(allow: Allow, packet: Packet) -> bool:
    """The proxy path: an allow for every container as on the forward path; any other by its
    own listeners (its containers' host ports, already within its ports)."""
    if allow.destinations is None:
        return matches(allow, packet)
    return comes_from(allow, packet) and listened(allow.listeners or (), packet)


def comes_from(allow: Allow, packet: Packet) -> bool:
    """The packet arrives where the allow says (via) from one of its sources."""
    return (allow.via is None or allow.via == packet.in_interface) and (
        allow.sources is None or any(packet.source in net for net in allow.sources)
    )


def selects(allow: Allow, addresses: Iterable[IPAddress]) -> bool:
    """The allow is for every container, or names one of these container addresses."""
    dests = allow.destinations
    return dests is None or any(a in net for a in addresses for net in dests)


def admits_port(allow: Allow, proto: Proto, port: int) -> bool:
    """The allow takes this dialed port (every port if it names none)."""
    ranges = allow.ports
    return ranges is None or any(r.proto is proto and port in r for r in ranges)


def listened(listeners: Iterable[Listener], packet: Packet) -> bool:
    """The packet is addressed to one of these host ports (the port as dialed: no NAT)."""
    return any(
        x.proto is packet.proto and x.port == packet.dialed_port and packet.destination in x.address
        for x in listeners
    )


def _to(allow: Allow, packet: Packet) -> bool:
    return selects(allow, (packet.destination,))
