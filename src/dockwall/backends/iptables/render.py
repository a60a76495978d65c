"""Render a one-family Ruleset to iptables chains, in the exact form iptables-save prints.

Pure. Matching iptables-save's canonical form lets apply compare desired and installed rules
line by line, so an unchanged policy writes nothing.

Layout (every chain is dockwall's own, named DOCKWALL*):

    DOCKER-USER (or FORWARD) -j DOCKWALL
    DOCKWALL          replies and traffic from bridges RETURN; traffic to a quarantined
                      address or bridge -g DOCKWALL-DEFAULT; traffic to a bridge
                      -g DOCKWALL-IN; anything else falls off the end (not governed)
    DOCKWALL-IN       allows for every container ("to: *") RETURN; then one line per class
                      (the containers named by the same allows): destination in the class's
                      ipset -g its chain; else -g DOCKWALL-DEFAULT
    DOCKWALL-C<n>     one per set of allows that share destinations: their matches RETURN;
                      else -g DOCKWALL-DEFAULT
    DOCKWALL-DEFAULT  DROP or REJECT (one place, so its counter is the default's)

    INPUT -j DOCKWALL-INPUT   (the proxy path: docker-proxy serves published ports there)
    DOCKWALL-INPUT    replies, loopback and traffic from bridges RETURN; to a quarantined
                      container's host port -g DOCKWALL-DEFAULT; to a host port Docker
                      publishes (-d where bound to one address) -g DOCKWALL-PROXY;
                      anything else falls off the end (the host's own services: untouched)
    DOCKWALL-PROXY    allows for every container as above; each other allow's own listeners
                      (the host ports of its containers) RETURN; else -g DOCKWALL-DEFAULT

Only DOCKWALL is entered with -j; the rest by -g (goto), so a RETURN anywhere returns to the
hook chain: the packet is handed back to Docker's rules, which still decide what is published.
The depth is fixed (nftables refuses chain paths deeper than about 15, gotos included), and
the allows for one destination are all in one chain, so no allow has to "fall through" to the
next one across chains. Containers are found by one set lookup per class, not a walk over
every container's address, and a container that joins an existing class is one ipset
element, not a rule (ipsets.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from dockwall.backends.iptables import ipsets
from dockwall.backends.iptables.classes import destination_classes
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset
from dockwall.model.values import (
    Family,
    IPNetwork,
    LogRate,
    PortRange,
    Verdict,
    checked_ifname,
    checked_name,
)

ENTRY = "DOCKWALL"
GOVERNED = "DOCKWALL-IN"
FROM = "DOCKWALL-FROM"  # traffic containers start, where outbound or between is governed
OUTBOUND = "DOCKWALL-OUT"
BETWEEN = "DOCKWALL-BETWEEN"
DEFAULT = "DOCKWALL-DEFAULT"
INPUT_ENTRY = "DOCKWALL-INPUT"
PROXY = "DOCKWALL-PROXY"
PREFIX = "DOCKWALL"

Chains = dict[str, list[str]]  # chain name -> rule specs, without the leading "-A CHAIN "


def render(family: Family, ruleset: Ruleset) -> Chains:
    """All of dockwall's chains for one family; ruleset must already be narrowed to it."""
    classes = destination_classes(ruleset.allows)
    chains: Chains = {ENTRY: list(_entry(ruleset)), GOVERNED: []}
    governed = [ln for a in ruleset.allows if a.destinations is None for ln in matches(a, family)]
    for number, (_, members) in enumerate(classes, start=1):
        dispatch = f"-m set --match-set {ipsets.class_name(family, members)} dst"
        governed.append(f"{dispatch} -g {PREFIX}-C{number}")
        logged = [a.rule for a in members if a.log]
        # Drops logged under a rule's name end here, so they are not logged twice.
        ending = (
            [_log(ruleset.log_rate, logged[0]), _default(family, ruleset.default)]
            if logged
            else [f"-g {DEFAULT}"]
        )
        allowed = [ln for a in members for ln in matches(a, family)]
        chains[f"{PREFIX}-C{number}"] = [*allowed, *ending]
    chains[GOVERNED] = [*governed, f"-g {DEFAULT}"]
    log = [_log(ruleset.log_rate, "default")] if ruleset.log_default else []
    chains[DEFAULT] = [*log, _default(family, ruleset.default)]
    chains[INPUT_ENTRY] = list(_input_entry(ruleset))
    chains[PROXY] = [*_proxy(ruleset.allows, family), f"-g {DEFAULT}"]
    if governs_containers(ruleset):
        chains |= _from_containers(family, ruleset)
    return chains


def governs_containers(ruleset: Ruleset) -> bool:
    """Whether traffic containers start is judged (outbound or between has a default)."""
    return ruleset.outbound_default is not None or ruleset.between_default is not None


def _from_containers(family: Family, ruleset: Ruleset) -> Chains:
    """DOCKWALL-FROM: out on a bridge, between containers; else outbound. A direction
    without a default RETURNs (Docker decides); one with a default gets its rules' lines
    and then that default, in a chain of its own."""
    chains: Chains = {}
    to_bridge = f"-g {BETWEEN}" if ruleset.between_default is not None else "-j RETURN"
    out = f"-g {OUTBOUND}" if ruleset.outbound_default is not None else "-j RETURN"
    chains[FROM] = [*(f"-o {b} {to_bridge}" for b in _bridges(ruleset)), out]
    if ruleset.outbound_default is not None:
        lines = [ln for e in ruleset.outbound for ln in egress_matches(e, family, False)]
        chains[OUTBOUND] = [*lines, _default(family, ruleset.outbound_default)]
    if ruleset.between_default is not None:
        verdict = _default(family, ruleset.between_default)
        quarantined = [f"-d {_net(n)} {verdict}" for n in ruleset.quarantine]
        lines = [ln for e in ruleset.between for ln in egress_matches(e, family, True)]
        chains[BETWEEN] = [*quarantined, *lines, verdict]
    return chains


def egress_matches(rule: Egress, family: Family, containers: bool) -> Iterator[str]:
    """One line per destination (or one for a destination set) and port range: source the
    rule's set of container addresses, [-d destination], [-o via], [-p proto], ports as
    dialed. Parts in the order iptables-save prints them."""
    by_set = ipsets.egress_by_set(rule.destinations, containers)
    dests = (None,) if rule.destinations is None or by_set else rule.destinations
    via = [] if rule.via is None else [f"-o {checked_ifname(rule.via)}"]
    src = f"-m set --match-set {ipsets.name(family, rule.rule)} src"
    dst_set = [f"-m set --match-set {ipsets.dest_name(family, rule.rule)} dst"] if by_set else []
    comment = f'-m comment --comment "dockwall:{checked_name(rule.rule)}" -j RETURN'
    for dest in dests:
        dst = [] if dest is None else [f"-d {_net(dest)}"]
        for ports in rule.ports or (None,):
            proto = [] if ports is None else [f"-p {ports.proto.value}"]
            yield " ".join([*dst, *via, *proto, src, *dst_set, *_ports(ports), comment])


def _replies() -> Iterator[str]:
    """Replies and ICMP errors: handed back; a connection's own packets are judged like its
    first (see backends/nftables/render.py's _replies: a conntrack entry is no permission)."""
    yield "-m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j RETURN"
    yield "-m conntrack --ctstate RELATED -j RETURN"


def _input_entry(ruleset: Ruleset) -> Iterator[str]:
    yield from _replies()
    yield "-i lo -j RETURN"
    for bridge in _bridges(ruleset):
        yield f"-i {bridge} -j RETURN"
    for listener in ruleset.quarantine_listeners:
        yield f"{_listener(listener)} -g {DEFAULT}"
    for listener in ruleset.listeners:
        yield f"{_listener(listener)} -g {PROXY}"


def _proxy(allows: tuple[Allow, ...], family: Family) -> list[str]:
    """The allows on the proxy path, in the order DOCKWALL-IN tries them: those for every
    container (their lines match no destination, so they serve here as they are), then each
    other allow's listeners."""
    every = [ln for a in allows if a.destinations is None for ln in matches(a, family)]
    own = [ln for a in allows if a.listeners for ln in matches(a, family, a.listeners)]
    return every + own


def _listener(listener: Listener) -> str:
    """`[-d host] -p tcp -m tcp --dport N`, as iptables-save prints it."""
    bound = listener.address
    dst = "" if bound.prefixlen == 0 else f"-d {_net(bound)} "
    proto = listener.proto.value
    return f"{dst}-p {proto} -m {proto} --dport {listener.port}"


def _log(rate: LogRate, name: str) -> str:
    """A rate-limited kernel log line; the prefix (at most 28 characters) names the rule."""
    prefix = f"dockwall:{checked_name(name)[:18]} "
    return (
        f"-m limit --limit {rate.count}/{rate.unit} --limit-burst {rate.burst} "
        f'-j LOG --log-prefix "{prefix}"'
    )


def _bridges(ruleset: Ruleset) -> list[str]:
    bridges = [checked_ifname(b) for b in ruleset.bridges]
    return bridges + [checked_ifname(p) + "+" for p in ruleset.bridge_prefixes]


def _entry(ruleset: Ruleset) -> Iterator[str]:
    bridges = _bridges(ruleset)
    yield from _replies()
    from_bridge = f"-g {FROM}" if governs_containers(ruleset) else "-j RETURN"
    for bridge in bridges:
        yield f"-i {bridge} {from_bridge}"
    yield from _quarantine(ruleset)
    for bridge in bridges:
        yield f"-o {bridge} -g {GOVERNED}"


def _quarantine(ruleset: Ruleset) -> Iterator[str]:
    """Quarantined addresses and bridges get the default before any allow, whatever interface
    the traffic leaves on (an unsafe bridge name is never written: its subnets are)."""
    for net in ruleset.quarantine:
        yield f"-d {_net(net)} -g {DEFAULT}"
    for bridge in ruleset.quarantine_bridges:
        yield f"-o {checked_ifname(bridge)} -g {DEFAULT}"


def matches(
    allow: Allow, family: Family, listeners: tuple[Listener, ...] | None = None
) -> Iterator[str]:
    """One line per (source, port range) of an allow, or per port range with a source set;
    destinations are matched by the caller. With listeners (the proxy path): one line per
    (source, listener) instead, the listener's host port and address in place of the dialed
    ports. Parts in the order iptables-save prints them."""
    via = [] if allow.via is None else [f"-i {checked_ifname(allow.via)}"]
    comment = f'-m comment --comment "dockwall:{checked_name(allow.rule)}" -j RETURN'
    by_set = ipsets.uses_set(allow)
    sources = (None,) if allow.sources is None or by_set else allow.sources
    match_set = [f"-m set --match-set {ipsets.name(family, allow.rule)} src"] if by_set else []
    for source in sources:
        src = [] if source is None else [f"-s {_net(source)}"]
        if listeners is not None:
            for x in listeners:
                dst = [] if x.address.prefixlen == 0 else [f"-d {_net(x.address)}"]
                name = x.proto.value
                dport = f"-m {name} --dport {x.port}"
                yield " ".join([*src, *dst, *via, f"-p {name}", *match_set, dport, comment])
            continue
        for ports in allow.ports or (None,):
            proto = [] if ports is None else [f"-p {ports.proto.value}"]
            yield " ".join([*src, *via, *proto, *match_set, *_ports(ports), comment])


def _default(family: Family, verdict: Verdict) -> str:
    if verdict is Verdict.DROP:
        return "-j DROP"
    icmp = "icmp-port-unreachable" if family is Family.V4 else "icmp6-port-unreachable"
    return f"-j REJECT --reject-with {icmp}"


def _ports(ports: PortRange | None) -> list[str]:
    if ports is None:
        return []
    span = str(ports.first) if ports.first == ports.last else f"{ports.first}:{ports.last}"
    return [f"-m conntrack --ctorigdstport {span}"]


def _net(net: IPNetwork) -> str:
    return f"{net.network_address}/{net.prefixlen}"
