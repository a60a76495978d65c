"""Which firewall backend Docker uses, from /info."""

from __future__ import annotations

import pytest

from dockwall.backends.nftables import docker_uses_nftables


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"FirewallBackend": {"Driver": "nftables"}}, True),
        (
            {"FirewallBackend": {"Driver": "nftables+firewalld", "Info": [["ReloadedAt", "x"]]}},
            True,
        ),
        ({"FirewallBackend": {"Driver": "iptables"}}, False),
        ({"FirewallBackend": {"Driver": "iptables+firewalld"}}, False),
        ({"FirewallBackend": None}, False),  # not Linux
        ({"ServerVersion": "20.10.24"}, False),  # before API 1.49: no such field
        ({"FirewallBackend": {"Driver": 3}}, False),
    ],
)
def test_docker_uses_nftables(info: dict[str, object], expected: bool) -> None:
    assert docker_uses_nftables(info) is expected
