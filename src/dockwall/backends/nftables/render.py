"""Render a Ruleset (both families) to dockwall's nftables table. Pure.

    chain forward       hook forward, priority -10 (before Docker's filter FORWARD), policy accept
                        replies and traffic from bridges: accept; to a quarantined address
                        (sets quarantine4/6) or bridge: the default; to a bridge: goto governed
    chain governed      one rule per allow (and family, and protocol): counter accept;
                        allows for every container first (see ruleset.in_order)
                        destinations of a rule that logs: goto log-<rule>
                        else [log "dockwall:default "] and the default: counter drop / reject
    chain log-<rule>    rate-limited log "dockwall:<rule> ", then the default verdict
    chain from          (where outbound or between has a default) traffic containers start:
                        out on a bridge: goto between (or accept); else goto outbound (or
                        accept)
    chain outbound      one rule per outbound rule (and family, and protocol): counter
                        accept; then the outbound default
    chain between       to a quarantined address: the between default; one rule per between
                        rule; then the between default
    chain input         hook input, priority -10, policy accept (the proxy path)
                        replies, loopback and traffic from bridges: accept; to a quarantined
                        container's host port (qlisten4/6): the default; to a host port
                        Docker publishes (listen4/listen6: address . protocol . port):
                        goto proxy; a socket in dockerd's cgroup, a port not known yet
                        (docker-proxy for a container being started): goto proxy, but
                        dockerd's own ports there; anything else (the host's services)
                        untouched
    chain proxy         the allows for every container as in governed; each other allow's
                        listeners (lsn4-<rule>); else [log] and the default verdict

An `accept` here only ends dockwall's chain: Docker's chains still run after it and decide
what is published. A `drop` is final. So dockwall narrows what Docker exposes and never opens
anything, as with the iptables backend (see backends/iptables/render.py for the same rules).

Sets, one per rule and family (`flags interval`): src4-<rule> (sources), dst4-<rule>
(containers), dst4_tcp-<rule> (container . dialed port), port_tcp-<rule> (dialed ports, any
container), log4-<rule> (containers whose drops that rule logs). The kind before the first
"-" has no "-" itself, so two rules' set names never collide. Addresses are collapsed
(adjacent hosts become one prefix) and port ranges merged, so no two elements overlap.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from dockwall.backends.nftables.model import (
    BASE,
    BETWEEN,
    FROM,
    GOVERNED,
    INPUT,
    LISTENER_TYPE,
    LOG_PREFIX,
    OUTBOUND,
    PRIORITY,
    PROXY,
    Chain,
    NftSet,
    Rule,
    Table,
    address,
    nft_set,
    ports,
    table,
)
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset, in_order
from dockwall.model.values import (
    Family,
    IPNetwork,
    LogRate,
    PortRange,
    Proto,
    ProxyCgroup,
    Verdict,
    checked_ifname,
    checked_name,
)

FAMILIES = (Family.V4, Family.V6)
_IP = {Family.V4: "ip", Family.V6: "ip6"}
_ADDR = {Family.V4: "ipv4_addr", Family.V6: "ipv6_addr"}
_DIGIT = {Family.V4: "4", Family.V6: "6"}
_IP_NAME = {Family.V4: "ipv4", Family.V6: "ipv6"}  # meta nfproto
_UNITS = {"sec": "second", "min": "minute", "hour": "hour", "day": "day"}
BASE_SPEC = f"type filter hook forward priority {PRIORITY}; policy accept;"
INPUT_SPEC = f"type filter hook input priority {PRIORITY}; policy accept;"


def render(ruleset: Ruleset) -> Table:
    sets: dict[str, NftSet] = {}
    governed = [rule for allow in in_order(ruleset.allows) for rule in allow_rules(allow, sets)]
    log_rules, log_chains = logging_rules(ruleset, sets)
    default = _log_line(ruleset, "default") if ruleset.log_default else []
    default.append(Rule(("counter", _verdict(ruleset.default))))
    proxy = [rule for allow in in_order(ruleset.allows) for rule in proxy_rules(allow, sets)]
    chains = [
        Chain(BASE, tuple(_entry(ruleset, sets)), BASE_SPEC),
        Chain(GOVERNED, (*governed, *log_rules, *default)),
        *log_chains,
        Chain(INPUT, tuple(input_entry(ruleset, sets)), INPUT_SPEC),
        Chain(PROXY, (*proxy, *default)),
        *from_containers(ruleset, sets),
    ]
    return table(list(sets.values()), chains)


def governs_containers(ruleset: Ruleset) -> bool:
    """Whether traffic containers start is judged (outbound or between has a default)."""
    return ruleset.outbound_default is not None or ruleset.between_default is not None


def from_containers(ruleset: Ruleset, sets: dict[str, NftSet]) -> list[Chain]:
    """The chains for traffic containers start, where a direction of it has a default."""
    if not governs_containers(ruleset):
        return []
    between, outbound = ruleset.between_default, ruleset.outbound_default
    bridges = _bridge_names(ruleset)
    entry = []
    if bridges:
        to_bridge = "accept" if between is None else f"goto {BETWEEN}"
        entry.append(Rule((f"oifname {_names(bridges)}", to_bridge)))
    entry.append(Rule(("accept",) if outbound is None else (f"goto {OUTBOUND}",)))
    chains = [Chain(FROM, tuple(entry))]
    if outbound is not None:
        rules = [r for e in ruleset.outbound for r in egress_rules(e, sets)]
        chains.append(Chain(OUTBOUND, (*rules, Rule(("counter", _verdict(outbound))))))
    if between is not None:
        quarantined = _quarantined_addresses(ruleset, sets, between)
        rules = [r for e in ruleset.between for r in egress_rules(e, sets)]
        ending = Rule(("counter", _verdict(between)))
        chains.append(Chain(BETWEEN, (*quarantined, *rules, ending)))
    return chains


def egress_rules(rule: Egress, sets: dict[str, NftSet]) -> list[Rule]:
    """An outbound or between rule: per family it has containers in, from their addresses
    (src4-<rule>), [out by via], [to its destinations (dst4-<rule>)], per protocol of its
    ports (the port dialed: port_tcp-<rule>)."""
    name = checked_name(rule.rule)
    found = []
    for family in FAMILIES:
        one = rule.in_family(family)
        if one is None:
            continue
        digit, ip, kind = _DIGIT[family], _IP[family], _ADDR[family]
        head = [f"{ip} saddr @{_add(sets, f'src{digit}-{name}', kind, _addresses(one.sources))}"]
        if one.via is not None:
            head.append(f'oifname "{checked_ifname(one.via)}"')
        if one.destinations is not None:
            dst = _add(sets, f"dst{digit}-{name}", kind, _addresses(one.destinations))
            head.append(f"{ip} daddr @{dst}")
        by_proto = _ports_by_proto(one.ports)
        tails: list[tuple[str, ...]] = [()]
        if by_proto is not None:
            tails = [
                (f"meta l4proto {p}", f"ct original proto-dst @{_port_set(sets, p, name, spans)}")
                for p, spans in by_proto.items()
            ]
        found += [Rule((*head, *t, "counter", "accept"), f"dockwall:{name}") for t in tails]
    return found


def input_entry(ruleset: Ruleset, sets: dict[str, NftSet]) -> list[Rule]:
    rules = [*_replies(), Rule(('iifname "lo"', "accept"))]
    bridges = _bridge_names(ruleset)
    if bridges:
        rules.append(Rule((f"iifname {_names(bridges)}", "accept")))
    for family in FAMILIES:
        odd = [x for x in ruleset.quarantine_listeners if x.family is family]
        if odd:
            name = _add(sets, f"qlisten{_DIGIT[family]}", _listener_type(family), _listening(odd))
            verdict = _verdict(ruleset.default)
            rules.append(Rule((f"{_listened(family)} @{name}", "counter", verdict)))
    for family in FAMILIES:
        found = [x for x in ruleset.listeners if x.family is family]
        name = _add(sets, f"listen{_DIGIT[family]}", _listener_type(family), _listening(found))
        rules.append(Rule((f"{_listened(family)} @{name}", f"goto {PROXY}")))
    return rules + _unseen_listeners(ruleset.proxy_cgroup)


def _unseen_listeners(where: ProxyCgroup | None) -> list[Rule]:
    """A socket in dockerd's cgroup that is not a known listener: docker-proxy for a container
    dockwall has not seen yet (being started). It is judged as a container no rule selects:
    only allows for every container let anyone in. The ports dockerd's cgroup listens on
    itself (`own`) are left alone."""
    if where is None:
        return []
    sock = f'socket cgroupv2 level {where.level} "{where.path}"'
    rules = []
    for proto in Proto:
        own = sorted(str(port) for p, port in where.own if p is proto)
        if own:
            dports = own[0] if len(own) == 1 else "{ " + ", ".join(own) + " }"
            rules.append(Rule((sock, f"{proto.value} dport {dports}", "accept")))
    return [*rules, Rule((sock, f"goto {PROXY}"))]


def proxy_rules(allow: Allow, sets: dict[str, NftSet]) -> list[Rule]:
    """An allow on the proxy path: one for every container matches there as in governed
    (its rules name no destination); any other, its own listeners, per family (a set that
    may be empty for now: a container's host ports coming or going change its elements)."""
    if allow.destinations is None:
        return allow_rules(allow, sets)
    rules = []
    for family in FAMILIES:
        one = allow.in_family(family)
        if one is None:
            continue
        name = checked_name(allow.rule)
        kind = _listener_type(family)
        found = _add(sets, f"lsn{_DIGIT[family]}-{name}", kind, _listening(one.listeners or ()))
        head = _head(one, family, name, sets)
        rules.append(
            Rule((*head, f"{_listened(family)} @{found}", "counter", "accept"), f"dockwall:{name}")
        )
    return rules


def _listener_type(family: Family) -> str:
    return LISTENER_TYPE.format(addr=_ADDR[family])


def _listened(family: Family) -> str:
    return f"{_IP[family]} daddr . meta l4proto . th dport"


def _listening(listeners: Iterable[Listener]) -> list[str]:
    return [f"{_net_text(x.address)} . {x.proto.value} . {x.port}" for x in listeners]


def _net_text(net: IPNetwork) -> str:
    return address(net)


def _bridge_names(ruleset: Ruleset) -> list[str]:
    prefixes = [checked_ifname(p) for p in ruleset.bridge_prefixes]
    named = [checked_ifname(b) for b in ruleset.bridges]
    # nft merges a name a wildcard already covers into the wildcard: leave it out ourselves.
    names = [b for b in named if not any(b.startswith(p) for p in prefixes)]
    return sorted({*names, *(p + "*" for p in prefixes)})


def _entry(ruleset: Ruleset, sets: dict[str, NftSet]) -> list[Rule]:
    bridges = _bridge_names(ruleset)
    rules = _replies()
    if bridges:
        from_bridge = f"goto {FROM}" if governs_containers(ruleset) else "accept"
        rules.append(Rule((f"iifname {_names(bridges)}", from_bridge)))
    rules += _quarantine(ruleset, sets)
    if bridges:
        rules.append(Rule((f"oifname {_names(bridges)}", f"goto {GOVERNED}")))
    return rules


def _replies() -> list[Rule]:
    """Replies, and ICMP errors about a connection: accepted. A connection's own packets
    (from the side that opened it) are judged by the rules like its first: conntrack can
    hold a stranger's tuple as established (an entry left from before a flush, or made up;
    conntrack passes a SYN on such an entry as established), and no such entry may let
    anyone in; a connection a flush let in is cut when the rules are back."""
    return [
        Rule(("ct direction reply", "ct state established,related", "accept")),
        Rule(("ct state related", "accept")),
    ]


def _quarantine(ruleset: Ruleset, sets: dict[str, NftSet]) -> list[Rule]:
    """Quarantined addresses (sets quarantine4/6) and bridges get the default before any
    allow, whatever interface the traffic leaves on; an unsafe bridge name is never written."""
    rules = _quarantined_addresses(ruleset, sets, ruleset.default)
    if ruleset.quarantine_bridges:
        names = _names([checked_ifname(b) for b in ruleset.quarantine_bridges])
        rules.append(Rule((f"oifname {names}", "counter", _verdict(ruleset.default))))
    return rules


def _quarantined_addresses(
    ruleset: Ruleset, sets: dict[str, NftSet], verdict: Verdict
) -> list[Rule]:
    """Traffic to a quarantined address (sets quarantine4/6) gets verdict."""
    rules = []
    for family in FAMILIES:
        nets = _addresses(n for n in ruleset.quarantine if Family.of(n) is family)
        if nets:
            found = _add(sets, f"quarantine{_DIGIT[family]}", _ADDR[family], nets)
            rules.append(Rule((f"{_IP[family]} daddr @{found}", "counter", _verdict(verdict))))
    return rules


def _names(names: list[str]) -> str:
    quoted = [f'"{n}"' for n in names]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def allow_rules(allow: Allow, sets: dict[str, NftSet]) -> list[Rule]:
    """The rules of one allow, its sets put into sets: one rule per family (by its
    addresses, or by `meta nfproto` if it names none: each family's traffic is counted
    apart) and per protocol of its ports."""
    if allow.sources is None and allow.destinations is None:
        return [
            Rule((f"meta nfproto {_IP_NAME[f]}", *r.exprs), r.comment)
            for f in FAMILIES
            for r in _allow_in(allow, None, sets)
        ]
    narrowed = [(f, allow.in_family(f)) for f in FAMILIES]
    return [r for f, a in narrowed if a is not None for r in _allow_in(a, f, sets)]


def _head(allow: Allow, family: Family | None, name: str, sets: dict[str, NftSet]) -> list[str]:
    """An allow's interface and source matches."""
    head = [] if allow.via is None else [f'iifname "{checked_ifname(allow.via)}"']
    if allow.sources is not None and family is not None:
        src = _add(sets, f"src{_DIGIT[family]}-{name}", _ADDR[family], _addresses(allow.sources))
        head.append(f"{_IP[family]} saddr @{src}")
    return head


def _allow_in(allow: Allow, family: Family | None, sets: dict[str, NftSet]) -> list[Rule]:
    name = checked_name(allow.rule)
    head = _head(allow, family, name, sets)
    tails = _targets(allow, family, name, sets)
    tail = ("counter", "accept")
    return [Rule((*head, *t, *tail), f"dockwall:{name}") for t in tails]


def _targets(
    allow: Allow, family: Family | None, name: str, sets: dict[str, NftSet]
) -> list[tuple[str, ...]]:
    """What an allow says of destinations and dialed ports: one match list per protocol."""
    by_proto = _ports_by_proto(allow.ports)
    if allow.destinations is None or family is None:
        if by_proto is None:
            return [()]
        return [
            (f"meta l4proto {p}", f"ct original proto-dst @{_port_set(sets, p, name, spans)}")
            for p, spans in by_proto.items()
        ]
    dests = _addresses(allow.destinations)
    digit, ip = _DIGIT[family], _IP[family]
    if by_proto is None:
        return [(f"{ip} daddr @{_add(sets, f'dst{digit}-{name}', _ADDR[family], dests)}",)]
    found: list[tuple[str, ...]] = []
    for proto, spans in by_proto.items():
        elements = [f"{d} . {s}" for d in dests for s in spans]
        kind = f"{_ADDR[family]} . inet_service"
        dst = _add(sets, f"dst{digit}_{proto}-{name}", kind, elements)
        found.append((f"meta l4proto {proto}", f"{ip} daddr . ct original proto-dst @{dst}"))
    return found


def _port_set(sets: dict[str, NftSet], proto: Proto, name: str, spans: list[str]) -> str:
    return _add(sets, f"port_{proto}-{name}", "inet_service", spans)


def _add(sets: dict[str, NftSet], name: str, type_: str, elements: list[str]) -> str:
    sets[name] = _set(name, type_, tuple(elements))
    return name


@functools.lru_cache(maxsize=1024)
def _set(name: str, type_: str, elements: tuple[str, ...]) -> NftSet:
    """Remembered: the daemon renders the same large source sets on every change."""
    return nft_set(name, type_, list(elements))


def _addresses(nets: Iterable[IPNetwork]) -> list[str]:
    return list(_collapsed(tuple(nets)))


@functools.lru_cache(maxsize=1024)
def _collapsed(nets: tuple[IPNetwork, ...]) -> tuple[str, ...]:
    """Collapsed, so that no two elements of an interval set overlap."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return tuple(address(n) for n in ipaddress.collapse_addresses(v4)) + tuple(
        address(n) for n in ipaddress.collapse_addresses(v6)
    )


def _ports_by_proto(ranges: tuple[PortRange, ...] | None) -> dict[Proto, list[str]] | None:
    """Merged port ranges per protocol (tcp before udp); None: any port."""
    if ranges is None:
        return None
    found: dict[Proto, list[str]] = {}
    for proto in Proto:
        spans = _merge(sorted((r.first, r.last) for r in ranges if r.proto is proto))
        if spans:
            found[proto] = [ports(first, last) for first, last in spans]
    return found


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def logging_rules(ruleset: Ruleset, sets: dict[str, NftSet]) -> tuple[list[Rule], list[Chain]]:
    """Drops of traffic to a container that a logging rule names are logged under the first
    such rule (in policy order), once, and not again as the default's."""
    rules, chains = [], []
    for name, by_family in _log_destinations(ruleset).items():
        checked = checked_name(name)
        for family in FAMILIES:
            if family in by_family:
                digit = _DIGIT[family]
                found = _add(sets, f"log{digit}-{checked}", _ADDR[family], by_family[family])
                rules.append(Rule((f"{_IP[family]} daddr @{found}", f"goto {LOG_PREFIX}{checked}")))
        ending = Rule(("counter", _verdict(ruleset.default)))
        chains.append(Chain(LOG_PREFIX + checked, (*_log_line(ruleset, checked), ending)))
    return rules, chains


def _log_destinations(ruleset: Ruleset) -> dict[str, dict[Family, list[str]]]:
    """Per rule that logs and selects containers, and per family it has sources in, the
    containers it is the first logging rule to name: maybe none for now (the set stays, so
    its containers coming and going change elements)."""
    first_logger: dict[IPNetwork, str] = {}
    grouped: dict[str, dict[Family, list[IPNetwork]]] = {}
    for allow in ruleset.allows:
        if allow.log and allow.destinations is not None:
            grouped[allow.rule] = {f: [] for f in FAMILIES if allow.in_family(f) is not None}
        for destination in allow.destinations or ():
            if allow.log:
                first_logger.setdefault(destination, allow.rule)
    for destination, name in first_logger.items():
        grouped.setdefault(name, {}).setdefault(Family.of(destination), []).append(destination)
    return {
        name: {f: _addresses(nets) for f, nets in by_family.items()}
        for name, by_family in grouped.items()
    }


def _log_line(ruleset: Ruleset, name: str) -> list[Rule]:
    return [Rule((_limit(ruleset.log_rate), f'log prefix "dockwall:{checked_name(name)[:18]} "'))]


def _limit(rate: LogRate) -> str:
    return f"limit rate {rate.count}/{_UNITS[rate.unit]} burst {rate.burst} packets"


def _verdict(verdict: Verdict) -> str:
    if verdict is Verdict.DROP:
        return "drop"
    return "reject with icmpx port-unreachable"
