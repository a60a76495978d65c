"""Reading the Engine API's answers: validated values only."""

from __future__ import annotations

import ipaddress
from typing import cast

import docker
import pytest
import requests.exceptions

from dockwall.errors import DockerError, UnsafeValueError
from dockwall.host import snapshot
from dockwall.model.hoststate import HostState
from dockwall.model.values import Family, Proto


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


class FakeApi:
    timeout = snapshot.API_TIMEOUT

    def __init__(self, networks: object, containers: object) -> None:
        self._networks, self._containers = networks, containers

    def networks(self) -> object:
        return self._networks

    def containers(self, all: bool = False, filters: object = None) -> object:
        """The running containers; none created but not started (all=True, status=created)."""
        return [] if all else self._containers


class FakeClient:
    def __init__(self, networks: object, containers: object) -> None:
        self.api = FakeApi(networks, containers)


def take(networks: object, containers: object = None) -> HostState:
    client = FakeClient(networks, [] if containers is None else containers)
    return snapshot.take(cast(docker.DockerClient, client), "28.5.2")


ODDNET = {
    "Id": "a" * 64,
    "Name": "oddnet",
    "Driver": "bridge",
    "Options": {"com.docker.network.bridge.name": 'x"y'},
    "IPAM": {"Config": [{"Subnet": "10.90.0.0/24"}, {"Subnet": "fd00:90::/64"}]},
}
WALLNET = {
    "Id": "b" * 64,
    "Name": "wallnet",
    "Driver": "bridge",
    "Options": {"com.docker.network.bridge.name": "wall0"},
    "IPAM": {"Config": [{"Subnet": "10.91.0.0/24"}]},
}


def test_hostile_bridge_name_quarantines_that_network_only() -> None:
    host = take([ODDNET, WALLNET])
    assert [n.bridge for n in host.networks] == ["wall0"]
    (odd,) = host.quarantined
    assert (odd.kind, odd.name, odd.key, odd.bridge) == ("network", "oddnet", "oddnet", None)
    assert odd.addresses == (
        ipaddress.ip_network("10.90.0.0/24"),
        ipaddress.ip_network("fd00:90::/64"),
    )
    assert "not a valid interface name" in odd.reason


def test_missing_fields_and_wrong_types_quarantine_not_abort() -> None:
    no_id = {k: v for k, v in WALLNET.items() if k != "Id"}
    bad_subnet = {**WALLNET, "Name": "half", "IPAM": {"Config": [{"Subnet": "10.1.0.0/33"}]}}
    container = {
        "Names": ["/c"],
        "NetworkSettings": {"Networks": {"w": {"IPAddress": "10.91.0.9"}}},
    }
    host = take([no_id, bad_subnet, "junk", ODDNET], [container, 7])
    assert host.networks == ()
    kinds = [(q.kind, q.name, q.bridge) for q in host.quarantined]
    assert kinds == [
        ("network", "wallnet", None),  # no Id: its bridge name can't be known for sure
        ("network", "half", "wall0"),  # a valid bridge name: dropped by name
        ("network", "(unnamed)", None),
        ("network", "oddnet", None),
        ("container", "c", None),
        ("container", "(unnamed)", None),
    ]
    assert host.quarantined[4].addresses == (ipaddress.ip_network("10.91.0.9/32"),)


def test_ipv6_zone_never_passes() -> None:
    """str() of a scoped IPv6 address carries the zone, free text, into rule text."""
    with pytest.raises(UnsafeValueError):
        snapshot._address('fe80::1%x"y')
    net = {**WALLNET, "IPAM": {"Config": [{"Subnet": 'fe80::%x"y/64'}]}}
    (odd,) = take([net]).quarantined
    assert odd.addresses == () and odd.bridge == "wall0"


def test_an_answer_that_is_not_a_list_is_docker_unreadable() -> None:
    with pytest.raises(DockerError, match="not a list"):
        take({"message": "page not found"})


def test_a_created_container_brings_its_configured_host_ports() -> None:
    """Before `start`, inspect knows the bindings (not the listing): host ports given are
    governed on the proxy path already; one Docker picks at start is not known yet."""
    detail = {
        "Id": "c" * 64,
        "Name": "/late",
        "Config": {"Labels": {"public": "yes"}},
        "HostConfig": {
            "PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "9090"}],
                "81/tcp": [{"HostIp": "198.51.100.1", "HostPort": "9091"}],
                "82/tcp": [{"HostIp": "", "HostPort": ""}],
                "83/sctp": [{"HostIp": "", "HostPort": "9093"}],
            }
        },
    }
    c = snapshot._created(detail)
    assert (c.name, c.running, c.endpoints, dict(c.labels)) == (
        "late",
        False,
        (),
        {"public": "yes"},
    )
    assert [(p.host_port, p.container_port, p.bound()) for p in c.ports] == [
        (9090, 80, (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))),
        (9091, 81, (ipaddress.ip_network("198.51.100.1/32"),)),
    ]
    with pytest.raises(ValueError):
        snapshot._created(
            {**detail, "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}}
        )


class StartingApi(FakeApi):
    """Two created containers: one Docker is starting (its inspect waits on the container's
    lock, so the call times out) and one at rest."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.timeouts: list[float] = []

    def containers(self, all: bool = False, filters: object = None) -> object:
        return [{"Id": "b" * 64}, {"Id": "c" * 64}] if all else []

    def inspect_container(self, cid: str) -> object:
        self.timeouts.append(self.timeout)
        if cid.startswith("b"):
            raise requests.exceptions.ReadTimeout("read timed out")
        return {"Id": cid, "Name": "/rest", "Config": {}, "HostConfig": {}}


def test_a_container_being_started_is_left_out_without_delaying_the_snapshot() -> None:
    """The inspect of a created container is bounded (CREATED_INSPECT_TIMEOUT, not the usual
    API timeout): the one being started is left out (its start event brings it in) and the
    snapshot, with the events before it, goes on."""
    client = FakeClient([], [])
    client.api = StartingApi()
    host = snapshot.take(cast(docker.DockerClient, client), "28.5.2")
    assert [c.name for c in host.containers] == ["rest"]
    assert client.api.timeouts == [snapshot.CREATED_INSPECT_TIMEOUT] * 2
    assert client.api.timeout == snapshot.API_TIMEOUT
    assert snapshot.CREATED_INSPECT_TIMEOUT < 0.2
