"""What the sandbox knows about a running container."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

PortMap = tuple[int, int]
"""(host port, container port), TCP."""


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str
    host_port: int
    container_port: int
    proto: str


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    network: str
    ipv4: IPv4Address
    ipv6: IPv6Address | None
    listen_ports: tuple[int, ...]
    published: tuple[PublishedPort, ...]

    def host_ports(self) -> tuple[int, ...]:
        """The distinct host ports this container is published on."""
        return tuple(sorted({port.host_port for port in self.published}))


@dataclass(frozen=True)
class Scenario:
    """The seed scenario: www-nginx and admin-app on docker0, db on dbnet."""

    containers: dict[str, ContainerInfo]

    def __getitem__(self, name: str) -> ContainerInfo:
        return self.containers[name]


def from_inspect(data: dict[str, Any], listen_ports: tuple[int, ...]) -> ContainerInfo:
    """Build a :class:`ContainerInfo` from one ``docker inspect`` object."""
    settings = data["NetworkSettings"]
    networks: dict[str, Any] = settings["Networks"]
    if len(networks) != 1:
        raise ValueError(f"expected one network, got {sorted(networks)}")
    network, endpoint = next(iter(networks.items()))
    published: list[PublishedPort] = []
    for key, bindings in sorted((settings.get("Ports") or {}).items()):
        port_text, proto = key.split("/")
        for binding in bindings or []:
            published.append(
                PublishedPort(
                    host_ip=binding["HostIp"],
                    host_port=int(binding["HostPort"]),
                    container_port=int(port_text),
                    proto=proto,
                )
            )
    ipv6 = endpoint.get("GlobalIPv6Address") or None
    return ContainerInfo(
        name=data["Name"].lstrip("/"),
        id=data["Id"],
        network=network,
        ipv4=IPv4Address(endpoint["IPAddress"]),
        ipv6=IPv6Address(ipv6) if ipv6 else None,
        listen_ports=listen_ports,
        published=tuple(published),
    )
