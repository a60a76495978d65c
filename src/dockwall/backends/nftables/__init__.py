"""The nftables backend: one table of dockwall's own, `table inet dockwall`, replaced whole by
one `nft -f` transaction (IPv4 and IPv6 together), or, where only set elements change, its
sets changed in one transaction.

render (Ruleset -> Table, pure) / patch (the same, from the last rendering, pure) / readback
(`nft -j` -> the same Table shape, pure) / transaction (the difference, pure) / netlink (set
element changes as an nfnetlink batch) / backend (the only code that runs nft or writes to
the kernel) / lines (the rendered line that gives check's answer).
"""

from dockwall.backends.nftables.backend import NftablesBackend
from dockwall.backends.nftables.docker import docker_firewall_backend, docker_uses_nftables

__all__ = ["NftablesBackend", "docker_firewall_backend", "docker_uses_nftables"]
