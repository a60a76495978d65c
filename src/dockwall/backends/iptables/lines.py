"""Where in a one-family iptables rendering the core's answer (dockwall.compile.decide) is
given: the chain and rule line. Pure.

What happens is decide.py's; this only names the line render.py wrote for it, the one the
kernel stops at (tests/unit/test_decide.py holds both to a rule-by-rule walk of the
rendering, tests/oracles/iptables_walk.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from dockwall.backends.iptables import ipsets, render
from dockwall.backends.iptables.classes import destination_classes
from dockwall.compile.decide import Ruling, Step, decide, is_bridge, listened
from dockwall.model.packets import Decision, Packet, Route
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family

Chains = render.Chains


def decision(ruleset: Ruleset, chains: Chains, packet: Packet) -> Decision:
    """ruleset's answer for packet, at its line in chains (render.render of ruleset narrowed
    to the packet's family)."""
    ruling = decide(ruleset, packet)
    chain, line = _WHERE[ruling.step](ruleset, ruling, chains, packet)
    return Decision(ruling.outcome, chain, line, ruling.policy_rule)


def _entry(packet: Packet) -> str:
    return render.INPUT_ENTRY if packet.route is Route.PROXY else render.ENTRY


def _not_judged(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    """The entry chain's `-i <interface> -j RETURN` the packet came in by; where traffic
    from containers is judged, DOCKWALL-FROM's RETURN for its direction."""
    if packet.route is Route.FORWARD and render.FROM in chains:
        return render.FROM, _from_line(chains, packet)
    chain = _entry(packet)
    for line in chains.get(chain, []):
        words = line.split()
        if len(words) == 4 and words[0] == "-i" and words[2:] == ["-j", "RETURN"]:
            name = words[1]
            if _names(name, packet.in_interface):
                return chain, line
    return chain, ""


def _names(pattern: str, interface: str) -> bool:
    """iptables' -i: a name, or a prefix ending in "+"."""
    if pattern.endswith("+"):
        return interface.startswith(pattern[:-1])
    return interface == pattern


def _from_line(chains: Chains, packet: Packet) -> str:
    """DOCKWALL-FROM's line for the interface the packet leaves by (its last: outbound)."""
    rules = chains.get(render.FROM, [])
    for line in rules[:-1]:
        words = line.split()
        if words[0] == "-o" and _names(words[1], packet.out_interface):
            return line
    return rules[-1] if rules else ""


def _egress_chain(packet: Packet, chains: Chains) -> str:
    """DOCKWALL-BETWEEN where the packet leaves on a bridge (DOCKWALL-FROM sends it there),
    else DOCKWALL-OUT."""
    line = _from_line(chains, packet)
    return render.BETWEEN if line.endswith(f"-g {render.BETWEEN}") else render.OUTBOUND


def _egress_allowed(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    """The line of the outbound or between rule for the packet's destination and port."""
    rule = ruling.egress  # (never None at the egress allow steps)
    chain = _egress_chain(packet, chains)
    if rule is None:
        return chain, ""
    containers = chain == render.BETWEEN
    lines = list(render.egress_matches(rule, Family.of(packet.source), containers))
    by_set = ipsets.egress_by_set(rule.destinations, containers)
    dests = (None,) if rule.destinations is None or by_set else rule.destinations
    dest = next((i for i, d in enumerate(dests) if d is None or packet.destination in d), None)
    ranges = rule.ports
    width = 1 if ranges is None else len(ranges)
    inner = 0 if ranges is None else next(
        (i for i, r in enumerate(ranges) if r.proto is packet.proto and packet.dialed_port in r),
        None,
    )  # fmt: skip
    if dest is None or inner is None:
        return chain, ""
    return chain, lines[dest * width + inner]


def _egress_default(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    chain = _egress_chain(packet, chains)
    return chain, _last(chains, chain)


def _quarantined(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    """From outside: DOCKWALL-DEFAULT's verdict; between containers, DOCKWALL-BETWEEN's line
    for the quarantined address."""
    from_container = is_bridge(ruleset, packet.in_interface)
    if packet.route is Route.FORWARD and from_container and render.FROM in chains:
        for line in chains.get(render.BETWEEN, []):
            words = line.split()
            if words[0] == "-d" and packet.destination in ipaddress.ip_network(words[1]):
                return render.BETWEEN, line
    return _default_chain(ruleset, ruling, chains, packet)


def _not_governed(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    """Fell off the end of the entry chain: no line decided."""
    return _entry(packet), ""


def _default_chain(
    ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet
) -> tuple[str, str]:
    """DOCKWALL-DEFAULT's verdict line (its last: a LOG line may come first)."""
    return render.DEFAULT, _last(chains, render.DEFAULT)


def _default(ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet) -> tuple[str, str]:
    """Logged under a rule: the verdict that ends the class chain of that rule (right after
    its LOG line); else DOCKWALL-DEFAULT's."""
    if ruling.logged_by is None or packet.route is Route.PROXY:
        return _default_chain(ruleset, ruling, chains, packet)
    chain = _class_chain(ruleset, packet)
    return chain, _last(chains, chain)


def _allowed(ruleset: Ruleset, ruling: Ruling, chains: Chains, packet: Packet) -> tuple[str, str]:
    """The line of the allow for the packet's source and port; in DOCKWALL-IN for an allow
    for every container, its class chain for the others, DOCKWALL-PROXY on the proxy path."""
    allow = ruling.allow  # (never None at Step.ALLOW)
    if allow is None:
        return _entry(packet), ""
    line = _line(allow, packet)
    if packet.route is Route.PROXY:
        return render.PROXY, line
    if allow.destinations is None:
        return render.GOVERNED, line
    return _class_chain(ruleset, packet), line


def _class_chain(ruleset: Ruleset, packet: Packet) -> str:
    """The chain of the destination's class: DOCKWALL-IN's first class set that holds it."""
    allows = ruleset.in_family(Family.of(packet.source)).allows
    for number, (members, _) in enumerate(destination_classes(allows), start=1):
        if any(packet.destination in net for net in members):
            return f"{render.PREFIX}-C{number}"
    return render.GOVERNED


def _line(allow: Allow, packet: Packet) -> str:
    """The first of the allow's rendered lines that takes packet. render.matches writes one
    line per source (or one for a source set), and within it one per port range (or per
    listener on the proxy path); the first that takes the packet is the first source that
    holds it with the first range (listener) that does."""
    family = Family.of(packet.source)
    listeners = allow.listeners or () if _by_listener(allow, packet) else None
    lines = list(render.matches(allow, family, listeners))
    sources = (None,) if allow.sources is None or ipsets.uses_set(allow) else allow.sources
    source = next((i for i, s in enumerate(sources) if s is None or packet.source in s), None)
    if listeners is not None:
        width = len(listeners)
        inner = next((i for i, x in enumerate(listeners) if listened((x,), packet)), None)
    elif allow.ports is None:
        width, inner = 1, 0
    else:
        width = len(allow.ports)
        inner = next(
            (i for i, r in enumerate(allow.ports) if r.proto is packet.proto
             and packet.dialed_port in r),
            None,
        )  # fmt: skip
    if source is None or inner is None:
        return ""
    index = source * width + inner
    return lines[index] if index < len(lines) else ""


def _by_listener(allow: Allow, packet: Packet) -> bool:
    """On the proxy path an allow that names containers is matched by their host ports."""
    return packet.route is Route.PROXY and allow.destinations is not None


def _comment(allow: Allow) -> str:
    return f'--comment "dockwall:{allow.rule}"'


def _last(chains: Chains, name: str) -> str:
    rules = chains.get(name, [])
    return rules[-1] if rules else ""


_WHERE: dict[Step, Callable[[Ruleset, Ruling, Chains, Packet], tuple[str, str]]] = {
    Step.FROM_BRIDGE: _not_judged,
    Step.LOOPBACK: _not_judged,
    Step.QUARANTINED_ADDRESS: _quarantined,
    Step.QUARANTINED_BRIDGE: _default_chain,
    Step.QUARANTINED_LISTENER: _default_chain,
    Step.NOT_TO_BRIDGE: _not_governed,
    Step.NOT_LISTENED: _not_governed,
    Step.ALLOW: _allowed,
    Step.DEFAULT: _default,
    Step.OUTBOUND_ALLOW: _egress_allowed,
    Step.OUTBOUND_DEFAULT: _egress_default,
    Step.BETWEEN_ALLOW: _egress_allowed,
    Step.BETWEEN_DEFAULT: _egress_default,
}
