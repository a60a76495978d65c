"""Where in the rendered table the core's answer (dockwall.compile.decide) is given. Pure.

This answers from the Ruleset, not from the rules read back: the backend only calls it with
the Ruleset whose rendering it compared with the kernel, and says when they differ (then the
answer is what the policy would do, not what the kernel does; see NftablesBackend.decide).
What happens is decide.py's; this module only names the chain and the rendered rule line
that do it.
"""

from __future__ import annotations

from collections.abc import Callable

from dockwall.backends.nftables.model import (
    BASE,
    BETWEEN,
    FROM,
    GOVERNED,
    INPUT,
    LOG_PREFIX,
    OUTBOUND,
    PROXY,
    Rule,
    Table,
)
from dockwall.compile.decide import Ruling, Step, decide
from dockwall.model.packets import Decision, Packet, Route
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family


def decision(ruleset: Ruleset, rendered: Table, packet: Packet) -> Decision:
    ruling = decide(ruleset, packet)
    chain, line = _WHERE[ruling.step](ruling, rendered, packet)
    return Decision(ruling.outcome, chain, line, ruling.policy_rule)


def _not_judged(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    """From a bridge (or loopback, on the proxy path): the entry chain's first iifname
    accept; where traffic from containers is judged, from's accept for its direction.
    (Known inexactness, kept: on the input hook that is loopback's, for a bridge too.)"""
    if packet.route is Route.FORWARD and rendered.chain(FROM) is not None:
        return FROM, _from_rule(rendered, ruling).text
    chain = INPUT if packet.route is Route.PROXY else BASE
    return chain, _base_line(rendered, "iifname", chain)


def _from_rule(rendered: Table, ruling: Ruling) -> Rule:
    """from's rule for the direction: its oifname rule between containers, else its last."""
    rules = _rules(rendered, FROM)
    between = ruling.step in (Step.BETWEEN_ALLOW, Step.BETWEEN_DEFAULT) or (
        ruling.step is Step.FROM_BRIDGE and ruling.between
    )
    return rules[0] if between and len(rules) > 1 else rules[-1]


def _egress_chain(ruling: Ruling) -> str:
    between = ruling.step in (Step.BETWEEN_ALLOW, Step.BETWEEN_DEFAULT)
    return BETWEEN if between else OUTBOUND


def _egress_allowed(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    chain = _egress_chain(ruling)
    rule = ruling.egress
    family = Family.of(packet.source)
    mine = f"dockwall:{rule.rule}" if rule is not None else None
    for found in _rules(rendered, chain):
        if found.comment == mine and _fits(found, family, packet):
            return chain, found.text
    return chain, ""


def _egress_default(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    chain = _egress_chain(ruling)
    rules = _rules(rendered, chain)
    return chain, rules[-1].text if rules else ""


def _quarantined(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    """The family's quarantine-set rule where there is one, else the bridge rule. (Known
    inexactness, kept: out on a quarantined bridge to an address not in the set, this names
    the set's rule, not the oifname rule that drops it.)"""
    starting = (
        "ip daddr @quarantine4" if packet.destination.version == 4 else "ip6 daddr @quarantine6"
    )
    if ruling.between:
        return BETWEEN, _base_line(rendered, starting, BETWEEN)
    by_address = _base_line(rendered, starting)
    return BASE, by_address or _base_line(rendered, "oifname")


def _quarantined_listener(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    family = "4" if packet.destination.version == 4 else "6"
    return INPUT, next(
        (r.text for r in _rules(rendered, INPUT) if f"@qlisten{family} " in r.text), ""
    )


def _not_governed(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    """Fell off the end of the entry chain: no line decided."""
    return (INPUT if packet.route is Route.PROXY else BASE), ""


def _allowed(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    chain = PROXY if packet.route is Route.PROXY else GOVERNED
    allow = ruling.allow  # (never None at Step.ALLOW)
    return chain, "" if allow is None else _allow_line(rendered, allow, packet, chain)


def _default(ruling: Ruling, rendered: Table, packet: Packet) -> tuple[str, str]:
    """The last line of the chain that gives the default: proxy, a logging rule's log-<rule>,
    or governed."""
    if packet.route is Route.PROXY:
        chain = PROXY
    else:
        logger = ruling.logged_by
        chain = GOVERNED if logger is None else LOG_PREFIX + logger.rule
    found = rendered.chain(chain)
    return chain, found.rules[-1].text if found is not None and found.rules else ""


_WHERE: dict[Step, Callable[[Ruling, Table, Packet], tuple[str, str]]] = {
    Step.FROM_BRIDGE: _not_judged,
    Step.LOOPBACK: _not_judged,
    Step.QUARANTINED_ADDRESS: _quarantined,
    Step.QUARANTINED_BRIDGE: _quarantined,
    Step.QUARANTINED_LISTENER: _quarantined_listener,
    Step.NOT_TO_BRIDGE: _not_governed,
    Step.NOT_LISTENED: _not_governed,
    Step.ALLOW: _allowed,
    Step.DEFAULT: _default,
    Step.OUTBOUND_ALLOW: _egress_allowed,
    Step.OUTBOUND_DEFAULT: _egress_default,
    Step.BETWEEN_ALLOW: _egress_allowed,
    Step.BETWEEN_DEFAULT: _egress_default,
}


def _rules(rendered: Table, chain_name: str) -> tuple[Rule, ...]:
    chain = rendered.chain(chain_name)
    return chain.rules if chain is not None else ()


def _base_line(rendered: Table, starting: str, chain_name: str = BASE) -> str:
    return next((r.text for r in _rules(rendered, chain_name) if r.text.startswith(starting)), "")


def _allow_line(rendered: Table, allow: Allow, packet: Packet, chain_name: str) -> str:
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
