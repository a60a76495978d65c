"""Validated value types: the only kinds of value that may reach rule text."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from dockwall.errors import UnsafeValueError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names of policy rules and groups: they appear in rule comments, so keep them plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
# Linux interface names: at most 15 bytes; no '/', whitespace, quotes or '+'.
IFNAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,14}")


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Family(StrEnum):
    V4 = "ipv4"
    V6 = "ipv6"

    @classmethod
    def of(cls, net: IPNetwork | IPAddress) -> Family:
        return cls.V4 if net.version == 4 else cls.V6


class Verdict(StrEnum):
    DROP = "drop"
    REJECT = "reject"


def checked_name(value: str) -> str:
    """Return value if it is a safe rule or group name, else raise."""
    if not NAME_PATTERN.fullmatch(value):
        raise UnsafeValueError(
            f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most 48)"
        )
    return value


def checked_ifname(value: str) -> str:
    """Return value if it is a safe Linux interface name, else raise."""
    if not IFNAME_PATTERN.fullmatch(value) or value in {".", ".."}:
        raise UnsafeValueError(f"{value!r} is not a valid interface name")
    return value


CGROUP_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}")


@dataclass(frozen=True)
class ProxyCgroup:
    """dockerd's cgroup (v2), where the sockets of its docker-proxy processes live.

    `path` is as nft names it (relative to /sys/fs/cgroup: "system.slice/docker.service",
    or "unified/..." where cgroup v2 is mounted at /sys/fs/cgroup/unified), `level` the
    cgroup's depth in the v2 hierarchy (the path's parts, less a leading "unified"). `own`:
    the (protocol, port) pairs that processes in that cgroup other than docker-proxy listen
    on (dockerd's API on TCP, Swarm's ports): never docker-proxy's, never touched."""

    path: str
    level: int
    own: tuple[tuple[Proto, int], ...] = ()

    def __post_init__(self) -> None:
        parts = self.path.split("/")
        if not all(CGROUP_PART.fullmatch(p) and p not in {".", ".."} for p in parts):
            raise UnsafeValueError(f"{self.path!r} is not a cgroup path dockwall writes")
        if not 1 <= self.level == cgroup_level(self.path):
            raise UnsafeValueError(f"cgroup {self.path!r} is not at level {self.level}")
        if not all(1 <= port <= 65535 for _, port in self.own):
            raise UnsafeValueError(f"bad port in {self.own}")


def cgroup_level(path: str) -> int:
    """The depth in the cgroup v2 hierarchy of a cgroup nft names by `path`."""
    parts = path.split("/")
    return len(parts) - (1 if parts[0] == "unified" else 0)


@dataclass(frozen=True, order=True)
class PortRange:
    """Ports the client dialed: first..last inclusive, one protocol."""

    proto: Proto
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= 65535:
            raise UnsafeValueError(f"bad port range {self.first}-{self.last} (1-65535)")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse "80", "80/tcp", "53/udp" or "8000-8100/tcp"."""
        ports, _, proto = text.strip().partition("/")
        try:
            protocol = Proto(proto.lower() or "tcp")
        except ValueError:
            raise UnsafeValueError(f"unknown protocol {proto!r} in {text!r} (tcp or udp)") from None
        first, _, last = ports.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise UnsafeValueError(f"bad port {text!r} (e.g. 80, 80/tcp, 8000-8100/tcp)")
        return cls(protocol, int(first), int(last or first))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.proto}"


def parse_network(text: str) -> IPNetwork:
    """Parse an address or CIDR; host bits set in a CIDR are an error, not silently masked."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise UnsafeValueError(f"{text!r} is not an address or CIDR ({exc})") from None


LOG_UNITS = {"second": "sec", "minute": "min", "hour": "hour", "day": "day"}


@dataclass(frozen=True)
class LogRate:
    """How often a drop may be logged: `count` per `unit` (iptables' spelling), `burst` at once."""

    count: int = 5
    unit: str = "sec"
    burst: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 10_000 or self.unit not in LOG_UNITS.values():
            raise UnsafeValueError(f"bad log rate {self.count}/{self.unit}")
        if not 1 <= self.burst <= 10_000:
            raise UnsafeValueError(f"bad log burst {self.burst} (1-10000)")

    @classmethod
    def parse(cls, rate: str, burst: int) -> Self:
        """'5/second', '10/minute', '1/hour', '100/day'."""
        count, _, unit = rate.partition("/")
        if not count.isdigit() or unit not in LOG_UNITS:
            raise UnsafeValueError(f"bad log rate {rate!r} (e.g. 5/second, 10/minute)")
        return cls(int(count), LOG_UNITS[unit], burst)


DEFAULT_LOG_RATE = LogRate()
