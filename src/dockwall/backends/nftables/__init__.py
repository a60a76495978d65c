"""The nftables backend: one table of dockwall's own, `table inet dockwall`, replaced whole by
one `nft -f` transaction (IPv4 and IPv6 together).

render (Ruleset -> Table, pure) / readback (`nft -j` -> the same Table shape, pure) /
transaction (the difference, pure) / backend (the only code that runs nft) / evaluate (check).
"""

from dockwall.backends.nftables.backend import NftablesBackend
from dockwall.backends.nftables.docker import docker_uses_nftables

__all__ = ["NftablesBackend", "docker_uses_nftables"]
