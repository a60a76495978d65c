"""Addresses of the sandbox network (documentation ranges only).

::

    WAN ns  eth0 198.51.100.10/.11/.99, 2001:db8:100::10/::11/::99
       |
    HOST ns eth0 198.51.100.1, 2001:db8:100::1   (runs dockerd)
            eth1 203.0.113.1,  2001:db8:200::1
       |
    LAN ns  eth0 203.0.113.5/.6/.99, 2001:db8:200::5/::6/::99

The outside namespaces route the container ranges (192.0.2.0/24,
2001:db8:d0c::/48) via HOST, so packets aimed straight at container addresses
reach Docker's host.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

NS_PREFIX = "dwsb-"

# Docker's own networks.
DEFAULT_BRIDGE_BIP = "192.0.2.1/26"  # 192.0.2.64/26 is left for tests' own networks
DEFAULT_BRIDGE_V6 = IPv6Network("2001:db8:d0c::/64")
DBNET_V4 = IPv4Network("192.0.2.128/25")
DBNET_V6 = IPv6Network("2001:db8:d0c:1::/64")
CONTAINER_V4 = IPv4Network("192.0.2.0/24")
CONTAINER_V6 = IPv6Network("2001:db8:d0c::/48")


class Side(enum.Enum):
    """An outside namespace."""

    WAN = "wan"
    LAN = "lan"


@dataclass(frozen=True)
class Link:
    """One veth link between HOST and an outside namespace."""

    side: Side
    host_ifname: str
    host4: IPv4Address
    host6: IPv6Address
    prefix4: int
    prefix6: int
    outside4: tuple[IPv4Address, ...]
    outside6: tuple[IPv6Address, ...]

    def addresses(self) -> tuple[IPv4Address | IPv6Address, ...]:
        return (*self.outside4, *self.outside6)


WAN_LINK = Link(
    side=Side.WAN,
    host_ifname="eth0",
    host4=IPv4Address("198.51.100.1"),
    host6=IPv6Address("2001:db8:100::1"),
    prefix4=24,
    prefix6=64,
    outside4=tuple(IPv4Address(f"198.51.100.{n}") for n in (10, 11, 99)),
    outside6=tuple(IPv6Address(f"2001:db8:100::{n}") for n in (10, 11, 99)),
)
LAN_LINK = Link(
    side=Side.LAN,
    host_ifname="eth1",
    host4=IPv4Address("203.0.113.1"),
    host6=IPv6Address("2001:db8:200::1"),
    prefix4=24,
    prefix6=64,
    outside4=tuple(IPv4Address(f"203.0.113.{n}") for n in (5, 6, 99)),
    outside6=tuple(IPv6Address(f"2001:db8:200::{n}") for n in (5, 6, 99)),
)
LINKS = (WAN_LINK, LAN_LINK)

# Named outside hosts, for readable tests.
WAN_ADMIN1_4, WAN_ADMIN2_4, WAN_STRANGER_4 = WAN_LINK.outside4
WAN_ADMIN1_6, WAN_ADMIN2_6, WAN_STRANGER_6 = WAN_LINK.outside6
LAN_HOST1_4, LAN_HOST2_4, LAN_STRANGER_4 = LAN_LINK.outside4
LAN_HOST1_6, LAN_HOST2_6, LAN_STRANGER_6 = LAN_LINK.outside6

# The tiny web server that containers reach for the egress check.
EGRESS_SERVER4 = WAN_ADMIN1_4
EGRESS_SERVER6 = WAN_ADMIN1_6
EGRESS_PORT = 8000


def side_of(address: str | IPv4Address | IPv6Address) -> Side:
    """The outside namespace that owns ``address``."""
    addr = ip_address(address)
    for link in LINKS:
        if addr in link.addresses():
            return link.side
    raise ValueError(f"{addr} is not an outside address of the sandbox")
