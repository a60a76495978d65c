"""Follow one packet through the Ruleset's semantics, which the table implements. Pure.

This answers from the Ruleset, not from the rules read back: the backend only calls it with
the Ruleset whose rendering it compared with the kernel, and says when they differ (then the
answer is what the policy would do, not what the kernel does; see NftablesBackend.decide).
The deciding rule is named with its line in the rendered table.
"""

from __future__ import annotations

from dockwall.backends.nftables.model import (
    BASE,
    GOVERNED,
    INPUT,
    LOG_PREFIX,
    PROXY,
    Rule,
    Table,
)
from dockwall.backends.nftables.render import in_order
from dockwall.packets import Decision, Outcome, Packet, Route
from dockwall.ruleset import Allow, Listener, Ruleset
from dockwall.values import Family, Verdict


def evaluate(ruleset: Ruleset, rendered: Table, packet: Packet) -> Decision:
    if packet.route is Route.PROXY:
        return _proxy(ruleset, rendered, packet)
    if _is_bridge(ruleset, packet.in_interface):  # accepted: handed to Docker, as iptables does
        return Decision(Outcome.ALLOWED, BASE, _base_line(rendered, "iifname"), None)
    outcome = Outcome.DROPPED if ruleset.default is Verdict.DROP else Outcome.REJECTED
    if ruleset.quarantines(packet.destination, packet.out_interface):
        return Decision(outcome, BASE, _quarantine_line(rendered, packet), None)
    if not _is_bridge(ruleset, packet.out_interface):
        return Decision(Outcome.NOT_GOVERNED, BASE, "", None)
    family = Family.of(packet.source)
    narrowed = ruleset.in_family(family)
    allow = next((a for a in in_order(narrowed.allows) if _matches(a, packet)), None)
    if allow is not None:
        return Decision(Outcome.ALLOWED, GOVERNED, _allow_line(rendered, allow, packet), allow.rule)
    logger = next(
        (a.rule for a in narrowed.allows if a.log and _to(a, packet) and a.destinations),
        None,
    )
    chain = GOVERNED if logger is None else LOG_PREFIX + logger
    found = rendered.chain(chain)
    line = found.rules[-1].text if found is not None and found.rules else ""
    return Decision(outcome, chain, line, None)


def _proxy(ruleset: Ruleset, rendered: Table, packet: Packet) -> Decision:
    """The input hook: docker-proxy's path to a host port Docker publishes."""
    if packet.in_interface == "lo" or _is_bridge(ruleset, packet.in_interface):
        return Decision(Outcome.ALLOWED, INPUT, _base_line(rendered, "iifname", INPUT), None)
    narrowed = ruleset.in_family(Family.of(packet.source))
    if not _listened(narrowed.listeners, packet):
        return Decision(Outcome.NOT_GOVERNED, INPUT, "", None)
    allow = next((a for a in in_order(narrowed.allows) if _proxy_matches(a, packet)), None)
    if allow is not None:
        line = _allow_line(rendered, allow, packet, PROXY)
        return Decision(Outcome.ALLOWED, PROXY, line, allow.rule)
    outcome = Outcome.DROPPED if ruleset.default is Verdict.DROP else Outcome.REJECTED
    found = rendered.chain(PROXY)
    return Decision(outcome, PROXY, found.rules[-1].text if found and found.rules else "", None)


def _listened(listeners: tuple[Listener, ...], packet: Packet) -> bool:
    return any(
        x.proto is packet.proto and x.port == packet.dialed_port and packet.destination in x.address
        for x in listeners
    )


def _proxy_matches(allow: Allow, packet: Packet) -> bool:
    """An allow for every container as on the forward path; any other by its listeners (its
    ports are already in them)."""
    if allow.destinations is None:
        return _matches(allow, packet)
    return (
        (allow.via is None or allow.via == packet.in_interface)
        and (allow.sources is None or any(packet.source in n for n in allow.sources))
        and _listened(allow.listeners or (), packet)
    )


def _base_line(rendered: Table, starting: str, chain_name: str = BASE) -> str:
    chain = rendered.chain(chain_name)
    rules = chain.rules if chain is not None else ()
    return next((r.text for r in rules if r.text.startswith(starting)), "")


def _quarantine_line(rendered: Table, packet: Packet) -> str:
    starting = (
        "ip daddr @quarantine4" if packet.destination.version == 4 else "ip6 daddr @quarantine6"
    )
    by_address = _base_line(rendered, starting)
    return by_address or _base_line(rendered, "oifname")


def _is_bridge(ruleset: Ruleset, name: str) -> bool:
    return name in ruleset.bridges or any(name.startswith(p) for p in ruleset.bridge_prefixes)


def _matches(allow: Allow, packet: Packet) -> bool:
    return (
        (allow.via is None or allow.via == packet.in_interface)
        and (allow.sources is None or any(packet.source in n for n in allow.sources))
        and _to(allow, packet)
        and (
            allow.ports is None
            or any(r.proto is packet.proto and packet.dialed_port in r for r in allow.ports)
        )
    )


def _to(allow: Allow, packet: Packet) -> bool:
    dests = allow.destinations
    return dests is None or any(packet.destination in n for n in dests)


def _allow_line(rendered: Table, allow: Allow, packet: Packet, chain_name: str = GOVERNED) -> str:
    """The rendered rule of this allow for the packet's family and protocol."""
    family = Family.of(packet.source)
    chain = rendered.chain(chain_name)
    for rule in chain.rules if chain is not None else ():
        if rule.comment == f"dockwall:{allow.rule}" and _fits(rule, family, packet):
            return rule.text
    return ""


def _fits(rule: Rule, family: Family, packet: Packet) -> bool:
    protos = [e.split()[-1] for e in rule.exprs if e.startswith("meta l4proto ")]
    return rule.family in (None, family) and all(p == packet.proto.value for p in protos)
