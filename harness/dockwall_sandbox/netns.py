"""Network namespaces of one sandbox and the veth links between them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._proc import IP, NSENTER, SandboxError, run
from .topology import CONTAINER_V4, CONTAINER_V6, LINKS, NS_PREFIX, Link, Side

NETNS_DIR = Path("/var/run/netns")


@dataclass(frozen=True)
class Namespaces:
    """The names of one sandbox's namespaces."""

    run_id: str

    @property
    def host(self) -> str:
        return f"{NS_PREFIX}{self.run_id}-host"

    def outside(self, side: Side) -> str:
        return f"{NS_PREFIX}{self.run_id}-{side.value}"

    def all(self) -> tuple[str, ...]:
        return (self.host, *(self.outside(link.side) for link in LINKS))

    def path(self, name: str) -> Path:
        return NETNS_DIR / name


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``ns`` with ``ip netns exec`` (own /sys)."""
    return [IP, "netns", "exec", ns, *argv]


def enter_argv(ns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``ns`` with ``nsenter --net``: no mount namespace of its
    own. For long-lived processes: ``ip netns exec`` gives each a private copy of the mount
    table, and where ``/`` is not a shared mount (as in some VMs) that copy pins every
    container's network-namespace mount that existed when it started, so the namespaces of
    containers a crashed dockerd leaves behind (same address, same MAC) live on beside their
    successors."""
    return [NSENTER, f"--net={NETNS_DIR / ns}", "--", *argv]


def sysctl(ns: str, *settings: str) -> None:
    run(exec_argv(ns, ["/usr/sbin/sysctl", "-q", "-w", *settings]))


def list_namespaces() -> list[str]:
    out = run([IP, "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    if (NETNS_DIR / name).exists() or name in list_namespaces():
        run([IP, "netns", "delete", name])


def pids_in(name: str) -> list[int]:
    out = run([IP, "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def create(spaces: Namespaces) -> None:
    """Create the namespaces and wire HOST to WAN and LAN."""
    for name in spaces.all():
        if name in list_namespaces():
            raise SandboxError(f"namespace {name} already exists")
        run([IP, "netns", "add", name])
        run([IP, "-n", name, "link", "set", "lo", "up"])
        # IPv6 addresses usable at once, on every interface made from now on.
        sysctl(name, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
    # HOST routes IPv6 itself; IPv4 forwarding is left to dockerd, which then
    # sets the FORWARD policy to DROP as on a real host.
    sysctl(spaces.host, "net.ipv6.conf.all.forwarding=1")
    for link in LINKS:
        _wire(spaces, link)


def _wire(spaces: Namespaces, link: Link) -> None:
    host, outside = spaces.host, spaces.outside(link.side)
    run(
        [
            IP,
            "-n",
            host,
            "link",
            "add",
            link.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside,
        ]
    )
    run([IP, "-n", host, "addr", "add", f"{link.host4}/{link.prefix4}", "dev", link.host_ifname])
    run(
        [
            IP,
            "-n",
            host,
            "addr",
            "add",
            f"{link.host6}/{link.prefix6}",
            "dev",
            link.host_ifname,
            "nodad",
        ]
    )
    run([IP, "-n", host, "link", "set", link.host_ifname, "up"])
    for addr4 in link.outside4:
        run([IP, "-n", outside, "addr", "add", f"{addr4}/{link.prefix4}", "dev", "eth0"])
    for addr6 in link.outside6:
        run([IP, "-n", outside, "addr", "add", f"{addr6}/{link.prefix6}", "dev", "eth0", "nodad"])
    run([IP, "-n", outside, "link", "set", "eth0", "up"])
    run([IP, "-n", outside, "route", "add", str(CONTAINER_V4), "via", str(link.host4)])
    run([IP, "-n", outside, "-6", "route", "add", str(CONTAINER_V6), "via", str(link.host6)])
