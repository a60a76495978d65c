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
from dockwall.ruleset import Allow, Ruleset, destination_classes
from dockwall.values import (
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
DEFAULT = "DOCKWALL-DEFAULT"
PREFIX = "DOCKWALL"

Chains = dict[str, list[str]]  # chain name -> rule specs, without the leading "-A CHAIN "


def render(family: Family, ruleset: Ruleset) -> Chains:
    """All of dockwall's chains for one family; ruleset must already be narrowed to it."""
    classes = destination_classes(ruleset.allows)
    chains: Chains = {ENTRY: list(_entry(ruleset)), GOVERNED: []}
    governed = [ln for a in ruleset.allows if a.destinations is None for ln in _matches(a, family)]
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
        matches = [ln for a in members for ln in _matches(a, family)]
        chains[f"{PREFIX}-C{number}"] = [*matches, *ending]
    chains[GOVERNED] = [*governed, f"-g {DEFAULT}"]
    log = [_log(ruleset.log_rate, "default")] if ruleset.log_default else []
    chains[DEFAULT] = [*log, _default(family, ruleset.default)]
    return chains


def _log(rate: LogRate, name: str) -> str:
    """A rate-limited kernel log line; the prefix (at most 28 characters) names the rule."""
    prefix = f"dockwall:{checked_name(name)[:18]} "
    return (
        f"-m limit --limit {rate.count}/{rate.unit} --limit-burst {rate.burst} "
        f'-j LOG --log-prefix "{prefix}"'
    )


def _entry(ruleset: Ruleset) -> Iterator[str]:
    bridges = [checked_ifname(b) for b in ruleset.bridges]
    bridges += [checked_ifname(p) + "+" for p in ruleset.bridge_prefixes]
    yield "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    for bridge in bridges:
        yield f"-i {bridge} -j RETURN"
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


def _matches(allow: Allow, family: Family) -> Iterator[str]:
    """One line per (source, port range) of an allow, or per port range with a source set;
    destinations are matched by the caller. Parts in the order iptables-save prints them."""
    via = [] if allow.via is None else [f"-i {checked_ifname(allow.via)}"]
    comment = f'-m comment --comment "dockwall:{checked_name(allow.rule)}" -j RETURN'
    by_set = ipsets.uses_set(allow)
    sources = (None,) if allow.sources is None or by_set else allow.sources
    match_set = [f"-m set --match-set {ipsets.name(family, allow.rule)} src"] if by_set else []
    for source in sources:
        for ports in allow.ports or (None,):
            src = [] if source is None else [f"-s {_net(source)}"]
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
