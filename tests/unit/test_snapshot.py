"""Reading the Engine API's answers: validated values only."""

from __future__ import annotations

import ipaddress

import pytest

from dockwall import snapshot
from dockwall.errors import DockerError
from dockwall.values import Proto


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
    assert [(p.host_port, p.container_port, p.proto) for p in c.ports] == [
        (8080, 80, Proto.TCP),
        (8080, 80, Proto.TCP),
    ]


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
