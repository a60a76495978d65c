"""Which host interface traffic from an address arrives on: the one the host routes it by."""

from __future__ import annotations

import json

from dockwall import proc
from dockwall.errors import BackendError
from dockwall.model.values import IPAddress, checked_ifname


def interface_towards(address: IPAddress) -> str:
    """`ip route get ADDRESS`'s device, validated."""
    out = proc.run(["ip", "-j", "route", "get", str(address)], timeout=5)
    try:
        routes = json.loads(out)
        return str(checked_ifname(routes[0]["dev"]))
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError(f"no route towards {address}: pass --via") from None
