"""The shape both sides are compared in: dockwall's table, as rendered and as read back. Pure.

A rule is a tuple of canonical text fragments (`iifname "eth0"`, `ip saddr @src4-admins`,
`counter`, `accept`), the words nft itself reads. render.py builds them from a Ruleset;
readback.py builds them from `nft -j` output. Equal Tables mean the kernel holds exactly what
dockwall would install, so an unchanged policy writes nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dockwall.model.values import Family

FAMILY = "inet"
NAME = "dockwall"
BASE = "forward"  # the base chain on the forward hook
GOVERNED = "governed"  # outside traffic on its way to a bridge
INPUT = "input"  # the base chain on the input hook (the proxy path)
PROXY = "proxy"  # outside traffic to a host port Docker publishes (docker-proxy serves it)
FROM = "from"  # traffic containers start, where outbound or between is governed
OUTBOUND = "outbound"  # from a container out of the host: its rules, then its default
BETWEEN = "between"  # from a container to a container: the same
LOG_PREFIX = "log-"  # chains that log, then give the default verdict
PRIORITY = -10  # before iptables(-nft)'s filter FORWARD (priority filter = 0) and Docker's own
COMMENT = "dockwall: outside traffic to Docker containers; `dockwall remove` deletes this table"
LISTENER_TYPE = "{addr} . inet_proto . inet_service"  # host address . protocol . host port


@dataclass(frozen=True)
class NftSet:
    name: str
    type: str  # "ipv4_addr", "ipv6_addr . inet_service", "inet_service"
    elements: tuple[str, ...]  # canonical (see element), in element_key order
    flags: str = "interval"

    @property
    def family(self) -> Family | None:
        if "ipv4_addr" in self.type:
            return Family.V4
        return Family.V6 if "ipv6_addr" in self.type else None


@dataclass(frozen=True)
class Rule:
    exprs: tuple[str, ...]
    comment: str = ""

    @property
    def text(self) -> str:
        comment = f' comment "{self.comment}"' if self.comment else ""
        return " ".join(self.exprs) + comment

    @property
    def family(self) -> Family | None:
        words = {e.split(" ", 1)[0] for e in self.exprs}
        if "ip" in words or "meta nfproto ipv4" in self.exprs:
            return Family.V4
        return Family.V6 if "ip6" in words or "meta nfproto ipv6" in self.exprs else None


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    base: str = ""  # "type filter hook forward priority -10; policy accept;" for a base chain


@dataclass(frozen=True)
class Table:
    sets: tuple[NftSet, ...]  # by name
    chains: tuple[Chain, ...]  # by name
    extras: tuple[str, ...] = ()  # objects found in the kernel that dockwall never makes

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)


def table(sets: list[NftSet], chains: list[Chain], extras: tuple[str, ...] = ()) -> Table:
    """A Table in canonical order, whoever built it."""
    return Table(
        tuple(sorted(sets, key=lambda s: s.name)),
        tuple(sorted(chains, key=lambda c: c.name)),
        tuple(sorted(extras)),
    )


def nft_set(name: str, type_: str, elements: list[str]) -> NftSet:
    return NftSet(name, type_, tuple(sorted(set(elements), key=element_key)))


def element_key(element: str) -> tuple[tuple[int, int, int, str], ...]:
    """Addresses numerically (IPv4 first), then port ranges; anything else (a protocol) last,
    by its text: a total order, so both sides sort alike."""
    return tuple(_part_key(part) for part in element.split(" . "))


def _part_key(part: str) -> tuple[int, int, int, str]:
    try:
        net = ipaddress.ip_network(part)
        return (net.version, int(net.network_address), net.prefixlen, "")
    except ValueError:
        pass
    first, _, last = part.partition("-")
    if first.isdigit() and (last or first).isdigit():
        return (10, int(first), int(last or first), "")
    return (11, 0, 0, part)


def address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """How nft writes an address or prefix: a host without its /32 or /128."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def ports(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def text(t: Table) -> str:
    """The table as an `nft -f` block, one element per line, so diffs read well."""
    out = [f"table {FAMILY} {NAME} {{", f'\tcomment "{COMMENT}"']
    for s in t.sets:
        out += [f"\tset {s.name} {{", f"\t\ttype {s.type}", f"\t\tflags {s.flags}"]
        if s.elements:
            out += ["\t\telements = {", *(f"\t\t\t{e}," for e in s.elements), "\t\t}"]
        out.append("\t}")
    for c in t.chains:
        out.append(f"\tchain {c.name} {{")
        out += [f"\t\t{c.base}"] if c.base else []
        out += [f"\t\t{r.text}" for r in c.rules]
        out.append("\t}")
    out += [f"\t# unexpected: {e}" for e in t.extras]
    return "\n".join([*out, "}", ""])


def transaction(t: Table) -> str:
    """Replace the table whole in one transaction: create it if missing, delete, recreate."""
    return f"table {FAMILY} {NAME} {{}}\ndelete table {FAMILY} {NAME}\n" + text(t)


def removal() -> str:
    return f"table {FAMILY} {NAME} {{}}\ndelete table {FAMILY} {NAME}\n"


def lines(t: Table) -> list[tuple[Family | None, str]]:
    """One line per set element and per rule, each naming where it is, with its family
    (None: both), for plan's added/removed."""
    out: list[tuple[Family | None, str]] = []
    for s in t.sets:
        out.append((s.family, f"set {s.name}: type {s.type}; flags {s.flags}"))
        out += [(s.family, f"set {s.name}: element {e}") for e in s.elements]
    for c in t.chains:
        out += [(None, f"chain {c.name}: {c.base}")] if c.base else []
        out += [(r.family, f"chain {c.name}: {r.text}") for r in c.rules]
    out += [(None, f"unexpected: {e}") for e in t.extras]
    return out
