"""Who can reach what: connection cases from the outside hosts, probed, and shown as a table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from . import topology as topo
from .containers import Scenario
from .sandbox import Sandbox

Address = IPv4Address | IPv6Address

NAMES = {
    "198.51.100.10": "admin-1",
    "198.51.100.11": "admin-2",
    "198.51.100.99": "wan-stranger",
    "203.0.113.5": "lan-1",
    "203.0.113.6": "lan-2",
    "203.0.113.99": "lan-stranger",
}


@dataclass(frozen=True)
class Case:
    """One connection attempt from outside."""

    source: Address
    destination: Address
    port: int  # the port dialed
    container: str
    container_port: int
    path: str  # "published" (to the host, DNAT) or "direct" (to the container's address)

    def __str__(self) -> str:
        return (
            f"{self.source} -> {self.destination}:{self.port} "
            f"({self.container}:{self.container_port}, {self.path})"
        )


def outside_sources() -> list[Address]:
    return [a for link in topo.LINKS for a in link.addresses()]


def source_name(source: Address) -> str:
    """admin-1, lan-stranger, ...: the same name for a host's IPv4 and IPv6 address."""
    for link in topo.LINKS:
        if source in link.outside6:
            source = link.outside4[link.outside6.index(source)]
    return NAMES.get(str(source), str(source))


def cases(scenario: Scenario, sources: Iterable[Address] | None = None) -> list[Case]:
    """Every source against every published port (at the host address on the source's side)
    and against every published container port at the container's own address."""
    found = []
    for source in outside_sources() if sources is None else sources:
        link = topo.WAN_LINK if source in topo.WAN_LINK.addresses() else topo.LAN_LINK
        host = link.host4 if source.version == 4 else link.host6
        for info in scenario.containers.values():
            inside = info.ipv4 if source.version == 4 else info.ipv6
            mappings = sorted({(p.host_port, p.container_port) for p in info.published})
            for host_port, container_port in mappings:
                found.append(Case(source, host, host_port, info.name, container_port, "published"))
                if inside is not None:
                    found.append(
                        Case(source, inside, container_port, info.name, container_port, "direct")
                    )
    return found


def probe(sandbox: Sandbox, found: list[Case]) -> dict[Case, bool]:
    """Try every case at once (one prober per outside namespace); True where HTTP answered."""
    results = sandbox.probe_auto([(c.source, c.destination, c.port) for c in found])
    return dict(zip(found, results, strict=True))


def table(observed: dict[Case, bool], path: str) -> str:
    """Rows: outside hosts (IPv4 and IPv6 apart); columns: container:port; cells open/-."""
    chosen = {c: ok for c, ok in observed.items() if c.path == path}
    columns = list(dict.fromkeys(f"{c.container}:{c.port}" for c in chosen))
    rows: dict[str, dict[str, str]] = {}
    for case, ok in chosen.items():
        label = f"{source_name(case.source)} (IPv{case.source.version})"
        rows.setdefault(label, {})[f"{case.container}:{case.port}"] = "open" if ok else "-"
    grid = [["from \\ to", *columns]]
    grid += [[label, *(cells.get(col, "") for col in columns)] for label, cells in rows.items()]
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in grid
    )
