"""Which firewall backend Docker uses, from /info."""

from __future__ import annotations

import pytest

from dockwall.backends.nftables import docker_firewall_backend, docker_uses_nftables
from dockwall.backends.nftables.docker import NOT_REPORTED
from dockwall.cli import report


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


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        # Docker 29.7.2's own answers (seen in the sandbox), without its Info list.
        ({"FirewallBackend": {"Driver": "nftables", "Info": []}}, "nftables"),
        ({"FirewallBackend": {"Driver": "iptables", "Info": []}}, "iptables"),
        ({"FirewallBackend": {"Driver": "nftables+firewalld"}}, "nftables+firewalld"),
        ({"ServerVersion": "20.10.24"}, NOT_REPORTED),
        ({"FirewallBackend": {"Driver": ""}}, NOT_REPORTED),
        ({"FirewallBackend": {"Driver": 3}}, NOT_REPORTED),
    ],
)
def test_docker_firewall_backend(info: dict[str, object], expected: str) -> None:
    assert docker_firewall_backend(info) == expected


@pytest.mark.parametrize(
    ("docker", "ours", "expected"),
    [
        ("nftables", "iptables", "no DOCKER-USER: dockwall's iptables rules hook FORWARD"),
        ("nftables+firewalld", "nftables", "drops before Docker's filter-FORWARD"),
        ("iptables", "iptables", "hook DOCKER-USER where Docker made it, else FORWARD"),
        (NOT_REPORTED, "iptables", "not reported (an engine before API 1.49: iptables)"),
    ],
)
def test_status_says_which_firewall_docker_uses(docker: str, ours: str, expected: str) -> None:
    line = report.docker_firewall_line({"docker_firewall_backend": docker, "backend": ours})
    assert line.startswith(f"Docker's firewall backend: {docker}") and expected in line
