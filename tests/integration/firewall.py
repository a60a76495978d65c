"""Helpers for the real-packet tests: run dockwall in the sandbox, build and judge probes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

from dockwall_sandbox import Sandbox, Scenario, Side
from dockwall_sandbox import topology as topo

SRC = str(Path(__file__).resolve().parents[2] / "src")
Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Case:
    """One connection attempt from outside."""

    source: Address
    destination: Address
    port: int  # the port dialed
    container: str
    container_port: int
    path: str  # "published" (to the host, DNAT) or "direct" (to the container's address)

    @property
    def side(self) -> Side:
        return (
            Side.WAN
            if self.source in ip_network("198.51.100.0/24")
            or self.source in (ip_network("2001:db8:100::/64"))
            else Side.LAN
        )

    def __str__(self) -> str:
        return (
            f"{self.source} -> {self.destination}:{self.port} "
            f"({self.container}:{self.container_port}, {self.path})"
        )


def dockwall(
    sandbox: Sandbox, *args: str, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the dockwall CLI inside the Docker host's namespace, against its engine."""
    argv = [sys.executable, "-m", "dockwall", *args]
    if policy is not None:
        argv += ["-p", str(policy)]
    if args and args[0] != "remove":
        argv += ["--docker-host", sandbox.docker_host]
    env = dict(os.environ, PYTHONPATH=SRC)
    return sandbox.run_in_host(argv, check=False, env=env, timeout=120)


def outside_sources() -> list[Address]:
    return [a for link in topo.LINKS for a in link.addresses()]


def cases(scenario: Scenario, sources: Iterable[Address] | None = None) -> list[Case]:
    """Every source against every published port (via the host address on the source's side)
    and against every published container port at the container's own address."""
    found = []
    for source in sources or outside_sources():
        link = topo.WAN_LINK if source in [*topo.WAN_LINK.addresses()] else topo.LAN_LINK
        host = link.host4 if source.version == 4 else link.host6
        for info in scenario.containers.values():
            inside = info.ipv4 if source.version == 4 else info.ipv6
            mappings = {(p.host_port, p.container_port) for p in info.published}
            for host_port, container_port in sorted(mappings):
                found.append(Case(source, host, host_port, info.name, container_port, "published"))
                if inside is not None:
                    found.append(
                        Case(source, inside, container_port, info.name, container_port, "direct")
                    )
    return found


def probe(sandbox: Sandbox, found: list[Case]) -> dict[Case, bool]:
    results = sandbox.probe_auto([(c.source, c.destination, c.port) for c in found])
    return dict(zip(found, results, strict=True))


def mismatches(observed: dict[Case, bool], expected: Callable[[Case], bool]) -> list[str]:
    return [
        f"{case}: expected {'open' if expected(case) else 'blocked'}, got "
        f"{'open' if ok else 'blocked'}"
        for case, ok in observed.items()
        if ok != expected(case)
    ]


def addr(text: str) -> Address:
    return ip_address(text)
