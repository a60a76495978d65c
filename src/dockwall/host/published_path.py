"""Whether Docker's NAT for published ports is in the kernel now. Read only.

Without it (after `nft flush ruleset`, until Docker restarts) a connection to a published
port is not DNATed: docker-proxy takes it, through the host's INPUT hook. `check` asks this
to say which path a connection really takes.
"""

from __future__ import annotations

import shutil

from dockwall import proc
from dockwall.errors import BackendError
from dockwall.model.values import Family

TIMEOUT = 10.0
SAVE = {Family.V4: "iptables-save", Family.V6: "ip6tables-save"}
NFT_TABLE = {Family.V4: "table ip docker-bridges", Family.V6: "table ip6 docker-bridges"}
HOOK = "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"  # Docker's iptables NAT hook


def present(family: Family) -> bool:
    """Docker's iptables NAT hook (nat PREROUTING -> DOCKER), or Docker 29's nftables table."""
    return _iptables(family) or _nftables(family)


def _iptables(family: Family) -> bool:
    if shutil.which(SAVE[family]) is None:
        return False
    try:
        text = proc.run([SAVE[family], "-t", "nat"], timeout=TIMEOUT)
    except BackendError:
        return False
    return HOOK in text.splitlines()


def _nftables(family: Family) -> bool:
    if shutil.which("nft") is None:
        return False
    try:
        text = proc.run(["nft", "list", "tables"], timeout=TIMEOUT)
    except BackendError:
        return False
    return NFT_TABLE[family] in text.splitlines()
