"""The test oracle for the iptables rendering: follow one packet through chains rule by rule, as
the kernel would. Pure.

The product answers `check` from the core (dockwall.compile.decide, named at its line by
backends/iptables/lines.py); this second implementation, which knows nothing of the core,
walks what render.py wrote, and tests hold the two equal.

Understands exactly the rule language render.py writes (and iptables-save prints back); a
line it can't read is reported, never guessed at.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from dockwall.backends.iptables.ipsets import Sets
from dockwall.backends.iptables.render import ENTRY, INPUT_ENTRY
from dockwall.errors import BackendError
from dockwall.model.packets import Decision, Outcome, Packet, Route

MAX_STEPS = 100_000  # rules walked at most: a loop in edited chains can't hang us


def evaluate(chains: dict[str, list[str]], packet: Packet, sets: Sets | None = None) -> Decision:
    """The fate of packet in chains; sets holds the members of the ipsets the rules name."""
    chain, index, steps = (ENTRY if packet.route is Route.FORWARD else INPUT_ENTRY), 0, 0
    stack: list[tuple[str, int]] = []
    while True:
        rules = chains.get(chain)
        if rules is None:
            raise BackendError(f"chain {chain} is not installed")
        if index >= len(rules):
            if not stack:
                return Decision(Outcome.NOT_GOVERNED, chain, "", None)
            chain, index = stack.pop()
            continue
        spec = rules[index]
        steps += 1
        if steps > MAX_STEPS:
            raise BackendError("the installed chains loop")
        rule = _parse(spec)
        if not rule.matches(packet, sets or {}):
            index += 1
            continue
        if rule.target == "LOG":
            index += 1  # logs and goes on
        elif rule.action == "-g":
            chain, index = rule.target, 0
        elif rule.action == "-j" and rule.target not in TERMINAL:
            stack.append((chain, index + 1))
            chain, index = rule.target, 0
        else:
            return Decision(TERMINAL[rule.target], chain, spec, rule.comment)


TERMINAL = {"RETURN": Outcome.ALLOWED, "DROP": Outcome.DROPPED, "REJECT": Outcome.REJECTED}


@dataclass
class _Rule:
    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    in_interface: tuple[bool, str] | None = None  # (negated, name)
    out_interface: tuple[bool, str] | None = None
    proto: str | None = None
    ports: tuple[int, int] | None = None  # conntrack's original destination port
    dport: tuple[int, int] | None = None  # the packet's own destination port
    new_only: bool = False  # "--ctstate RELATED,ESTABLISHED" never matches a first packet
    comment: str | None = None
    match_set: str | None = None  # ipset the source must be in
    match_set_dst: str | None = None  # ipset the destination must be in
    action: str = ""
    target: str = ""

    def matches(self, packet: Packet, sets: Sets) -> bool:
        checks = (
            self.match_set is None
            or any(packet.source in net for net in sets.get(self.match_set, ())),
            self.match_set_dst is None
            or any(packet.destination in net for net in sets.get(self.match_set_dst, ())),
            self.source is None or packet.source in self.source,
            self.destination is None or packet.destination in self.destination,
            _iface(self.in_interface, packet.in_interface),
            _iface(self.out_interface, packet.out_interface),
            self.proto is None or self.proto == packet.proto.value,
            self.ports is None or self.ports[0] <= packet.dialed_port <= self.ports[1],
            self.dport is None or self.dport[0] <= _dport(packet) <= self.dport[1],
            not self.new_only,
        )
        return all(checks)


def _dport(packet: Packet) -> int:
    """The destination port as the packet carries it: the dialed one on the proxy path (no
    NAT there); in FORWARD, after DNAT, which dockwall's forward chains never match on."""
    return packet.dialed_port if packet.route is Route.PROXY else -1


def _iface(match: tuple[bool, str] | None, name: str) -> bool:
    if match is None:
        return True
    negated, pattern = match
    hit = name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern
    return hit != negated


def _parse(spec: str) -> _Rule:
    rule, words, negate = _Rule(), shlex.split(spec), False
    i = 0
    while i < len(words):
        if words[i] == "!":
            negate, i = True, i + 1
            continue
        value = words[i + 1] if i + 1 < len(words) else ""
        if words[i] == "--match-set":
            direction = words[i + 2 : i + 3]
            if direction not in (["src"], ["dst"]):
                raise BackendError(f"cannot read installed rule (set match {direction}): {spec}")
            setattr(rule, "match_set" if direction == ["src"] else "match_set_dst", value)
        else:
            _apply(rule, words[i], value, negate)
        negate, i = False, i + (3 if words[i] == "--match-set" else 2)
    if not rule.action:
        raise BackendError(f"cannot read installed rule: {spec}")
    return rule


def _apply(rule: _Rule, word: str, value: str, negate: bool) -> None:
    """Set what one option and its value say on rule."""
    setter = _OPTIONS.get(word)
    if setter is None:
        raise BackendError(f"cannot read installed rule option {word!r}")
    setter(rule, value, negate)


def _ports(value: str) -> tuple[int, int]:
    first, _, last = value.partition(":")
    return int(first), int(last or first)


def _set(name: str, convert: Callable[[str], object]) -> Callable[[_Rule, str, bool], None]:
    return lambda rule, value, negate: setattr(rule, name, convert(value))


def _interface(name: str) -> Callable[[_Rule, str, bool], None]:
    return lambda rule, value, negate: setattr(rule, name, (negate, value))


def _target(rule: _Rule, value: str, action: str) -> None:
    rule.action, rule.target = action, value


_OPTIONS: dict[str, Callable[[_Rule, str, bool], None]] = {
    "-s": _set("source", ipaddress.ip_network),
    "-d": _set("destination", ipaddress.ip_network),
    "-i": _interface("in_interface"),
    "-o": _interface("out_interface"),
    "-p": _set("proto", str),
    "-m": lambda rule, value, negate: None,  # module names: their options say what they match
    "--ctorigdstport": _set("ports", _ports),
    "--dport": _set("dport", _ports),
    "--ctstate": _set("new_only", lambda v: "NEW" not in v.split(",")),
    # a first packet is in the ORIGINAL direction: a rule for replies never matches it
    "--ctdir": lambda rule, value, negate: setattr(
        rule, "new_only", rule.new_only or (value == "REPLY") != negate
    ),
    "--comment": _set("comment", lambda v: v.removeprefix("dockwall:")),
    "--reject-with": lambda rule, value, negate: None,
    "--limit": lambda rule, value, negate: None,  # rate limits only apply to LOG lines
    "--limit-burst": lambda rule, value, negate: None,
    "--log-prefix": lambda rule, value, negate: None,
    "-j": lambda rule, value, negate: _target(rule, value, "-j"),
    "-g": lambda rule, value, negate: _target(rule, value, "-g"),
}
