"""Reading the Engine API's answers: validated values only."""

from __future__ import annotations

import ipaddress

import pytest

from dockwall import snapshot
from dockwall.errors import DockerError
from dockwall.values import Family, Proto


def test_container_from_api_listing() -> None:
    raw = {
        "Id": "abc123",
        "Names": ["/www-nginx"],
        "Labels": {"a": "b"},
        "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 9000, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 1, "PublicPort": 1, "Type": "sctp"},
        ],
        "NetworkSettings": {
            "Networks": {
                "bridge": {"IPAddress": "192.0.2.2", "GlobalIPv6Address": "2001:db8:d0c::2"},
                "none": {"IPAddress": "", "GlobalIPv6Address": ""},
            }
        },
    }
    c = snapshot._container(raw)
    assert c.name == "www-nginx"
    assert c.endpoints[0].ipv4 == ipaddress.ip_address("192.0.2.2")
    assert c.endpoints[1].ipv4 is None
    # Docker lists the 0.0.0.0 and :: bindings apart: one port, bound in both families.
    assert [(p.host_port, p.container_port, p.proto, p.families) for p in c.ports] == [
        (8080, 80, Proto.TCP, frozenset(Family)),
    ]
    assert c.ports[0].host_ip is None
    assert c.ports[0].bound() == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )


def test_bindings_keep_their_family_and_address() -> None:
    raw = {
        "Id": "abc123",
        "Names": ["/v4only"],
        "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "198.51.100.1", "PrivatePort": 81, "PublicPort": 8081, "Type": "tcp"},
        ],
    }
    c = snapshot._container(raw)
    assert [(p.host_port, p.bound()) for p in c.ports] == [
        (8080, (ipaddress.ip_network("0.0.0.0/0"),)),
        (8081, (ipaddress.ip_network("198.51.100.1/32"),)),
    ]
    assert c.ports[0].serves(ipaddress.ip_address("203.0.113.1"))
    assert not c.ports[0].serves(ipaddress.ip_address("2001:db8:100::1"))
    assert not c.ports[1].serves(ipaddress.ip_address("203.0.113.1"))


def test_bridge_names() -> None:
    default = snapshot._network(
        {
            "Id": "f" * 64,
            "Name": "bridge",
            "Driver": "bridge",
            "Options": {"com.docker.network.bridge.name": "docker0"},
        }
    )
    user = snapshot._network({"Id": "5e3f0c1a2b4d" + "0" * 52, "Name": "n", "Driver": "bridge"})
    host = snapshot._network({"Id": "1" * 64, "Name": "host", "Driver": "host"})
    assert (default.bridge, user.bridge, host.bridge) == ("docker0", "br-5e3f0c1a2b4d", None)


def test_hostile_bridge_name_is_refused() -> None:
    with pytest.raises(DockerError, match="not a valid interface name"):
        snapshot._network(
            {
                "Id": "f" * 64,
                "Name": "evil",
                "Driver": "bridge",
                "Options": {"com.docker.network.bridge.name": "x -j ACCEPT"},
            }
        )
