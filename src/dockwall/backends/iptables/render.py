"""Render a one-family Ruleset to iptables chains, in the exact form iptables-save prints.

Pure. Matching iptables-save's canonical form lets apply compare desired and installed rules
line by line, so an unchanged policy writes nothing.

Layout (every chain is dockwall's own, named DOCKWALL*):

    DOCKER-USER (or FORWARD) -j DOCKWALL
    DOCKWALL          replies and traffic from bridges RETURN; traffic to a bridge -g DOCKWALL-R1
    DOCKWALL-R<n>     one per allow: wrong interface -g next; each (destination, port) that
                      matches -g DOCKWALL-S<n> (or RETURN when any source is allowed); else next
    DOCKWALL-S<n>     each allowed source RETURNs; else -g next
    DOCKWALL-DEFAULT  DROP or REJECT

Only DOCKWALL is entered with -j; the rest with -g (goto), so a RETURN anywhere returns
straight to the hook chain: the packet is handed back to Docker's rules, which still decide
what is published. Falling through every allow ends in DOCKWALL-DEFAULT.
"""

from __future__ import annotations

from collections.abc import Iterator

from dockwall.ruleset import Allow, Ruleset
from dockwall.values import Family, IPNetwork, PortRange, Verdict, checked_ifname, checked_name

ENTRY = "DOCKWALL"
DEFAULT = "DOCKWALL-DEFAULT"
PREFIX = "DOCKWALL"

Chains = dict[str, list[str]]  # chain name -> rule specs, without the leading "-A CHAIN "


def render(family: Family, ruleset: Ruleset) -> Chains:
    """All of dockwall's chains for one family; ruleset must already be narrowed to it."""
    allows = ruleset.allows
    chains: Chains = {ENTRY: list(_entry(ruleset, _rule_chain(1, allows)))}
    for index, allow in enumerate(allows, start=1):
        following = _rule_chain(index + 1, allows)
        chains[f"{PREFIX}-R{index}"] = list(_allow(index, allow, following))
        if allow.sources is not None:
            chains[f"{PREFIX}-S{index}"] = list(_sources(allow, following))
    chains[DEFAULT] = [_default(family, ruleset.default)]
    return chains


def _rule_chain(index: int, allows: tuple[Allow, ...]) -> str:
    return f"{PREFIX}-R{index}" if index <= len(allows) else DEFAULT


def _entry(ruleset: Ruleset, first: str) -> Iterator[str]:
    bridges = [checked_ifname(b) for b in ruleset.bridges]
    bridges += [checked_ifname(p) + "+" for p in ruleset.bridge_prefixes]
    yield "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    for bridge in bridges:
        yield f"-i {bridge} -j RETURN"
    for bridge in bridges:
        yield f"-o {bridge} -g {first}"


def _allow(index: int, allow: Allow, following: str) -> Iterator[str]:
    if allow.via is not None:
        yield f"! -i {checked_ifname(allow.via)} -g {following}"
    if allow.sources is None:
        target = f'-m comment --comment "dockwall:{checked_name(allow.rule)}" -j RETURN'
    else:
        target = f"-g {PREFIX}-S{index}"
    for destination in allow.destinations or (None,):
        for ports in allow.ports or (None,):
            yield " ".join([*_dest(destination), *_ports(ports), target])
    if allow.destinations is not None or allow.ports is not None:
        yield f"-g {following}"  # nothing above matched: on to the next allow


def _sources(allow: Allow, following: str) -> Iterator[str]:
    comment = f'-m comment --comment "dockwall:{checked_name(allow.rule)}"'
    for source in allow.sources or ():
        yield f"-s {_net(source)} {comment} -j RETURN"
    yield f"-g {following}"


def _default(family: Family, verdict: Verdict) -> str:
    if verdict is Verdict.DROP:
        return "-j DROP"
    icmp = "icmp-port-unreachable" if family is Family.V4 else "icmp6-port-unreachable"
    return f"-j REJECT --reject-with {icmp}"


def _dest(destination: IPNetwork | None) -> list[str]:
    return [] if destination is None else [f"-d {_net(destination)}"]


def _ports(ports: PortRange | None) -> list[str]:
    if ports is None:
        return []
    span = str(ports.first) if ports.first == ports.last else f"{ports.first}:{ports.last}"
    return [f"-p {ports.proto.value} -m conntrack --ctorigdstport {span}"]


def _net(net: IPNetwork) -> str:
    return f"{net.network_address}/{net.prefixlen}"
