"""Take a HostState from the Docker Engine API (through the Docker SDK) and the host's links.

This is the only module that reads Docker. Everything it returns is validated: addresses are
ipaddress objects, bridge names pass the interface-name check, ports are ints.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import docker
import docker.errors
import requests.exceptions

from dockwall.errors import DockerError, UnsafeValueError
from dockwall.hoststate import Container, Endpoint, HostState, Network, PublishedPort
from dockwall.values import Family, IPAddress, IPNetwork, Proto, checked_ifname

log = logging.getLogger(__name__)

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
API_TIMEOUT = 10  # seconds, for every Engine API call


def connect(docker_host: str | None) -> docker.DockerClient:
    """A client for docker_host, else $DOCKER_HOST, else the standard socket."""
    try:
        if docker_host:
            return docker.DockerClient(base_url=docker_host, timeout=API_TIMEOUT)
        return docker.from_env(timeout=API_TIMEOUT)
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach Docker: {exc}") from None


def take(client: docker.DockerClient, version: str | None = None) -> HostState:
    """A consistent-enough snapshot: networks, running containers, engine version, links.
    Pass the engine version if known, to save an API call."""
    try:
        if version is None:
            version = engine_version(client)
        networks = tuple(_network(raw) for raw in client.api.networks())
        containers = tuple(_container(raw) for raw in client.api.containers())
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"cannot read Docker: {exc}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise DockerError(f"unexpected answer from Docker: {exc!r}") from None
    return HostState(containers, networks, host_interfaces(), version)


def engine_info(client: docker.DockerClient) -> dict[str, object]:
    """The Engine's /info answer (which firewall backend Docker itself uses, among others)."""
    try:
        return dict(client.info())
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"cannot read Docker: {exc}") from None


def engine_version(client: docker.DockerClient) -> str:
    return str(client.version().get("Version", "unknown"))


def host_interfaces() -> frozenset[str]:
    """Names of the network interfaces in this network namespace."""
    return frozenset(name for _, name in socket.if_nameindex())


def _network(raw: Mapping[str, Any]) -> Network:
    net_id = str(raw["Id"])
    driver = str(raw.get("Driver", ""))
    bridge = None
    if driver == "bridge":
        options = raw.get("Options") or {}
        name = options.get(BRIDGE_NAME_OPTION) or f"br-{net_id[:12]}"
        bridge = _checked(checked_ifname, name, f"network {raw.get('Name')!r} bridge")
    subnets: list[IPNetwork] = []
    for config in (raw.get("IPAM") or {}).get("Config") or []:
        subnet = config.get("Subnet")
        if subnet:
            subnets.append(ipaddress.ip_network(subnet, strict=False))
    return Network(net_id, str(raw.get("Name", "")), driver, bridge, tuple(subnets))


def _container(raw: Mapping[str, Any]) -> Container:
    names = raw.get("Names") or [raw["Id"][:12]]
    name = str(names[0]).lstrip("/")
    labels = {str(k): str(v) for k, v in (raw.get("Labels") or {}).items()}
    networks = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    endpoints = tuple(
        Endpoint(
            str(net_name),
            _address(ep.get("IPAddress")),
            _address(ep.get("GlobalIPv6Address")),
        )
        for net_name, ep in networks.items()
    )
    ports = _merged(p for p in (_port(raw_port) for raw_port in raw.get("Ports") or []) if p)
    return Container(str(raw["Id"]), name, labels, endpoints, ports)


def _port(raw: Mapping[str, Any]) -> PublishedPort | None:
    public = raw.get("PublicPort")
    proto = raw.get("Type", "tcp")
    if not public or proto not in {p.value for p in Proto}:
        return None
    bound = raw.get("IP")
    unspecified = _unspecified(bound)
    families = frozenset(Family) if unspecified is None else frozenset({unspecified})
    return PublishedPort(
        _address(bound), int(public), int(raw["PrivatePort"]), Proto(proto), families
    )


def _unspecified(text: object) -> Family | None:
    """The family of a binding to every address (0.0.0.0, ::); None: another or none."""
    if not text or not isinstance(text, str):
        return None
    addr = ipaddress.ip_address(text)
    return Family.of(addr) if addr.is_unspecified else None


def _merged(ports: Iterable[PublishedPort]) -> tuple[PublishedPort, ...]:
    """One port per binding: Docker lists 0.0.0.0 and :: apart, as two of the same port."""
    found: dict[tuple[object, ...], PublishedPort] = {}
    for p in ports:
        key = (p.host_ip, p.host_port, p.container_port, p.proto)
        old = found.get(key)
        found[key] = p if old is None else replace(old, families=old.families | p.families)
    return tuple(found.values())


def _address(text: object) -> IPAddress | None:
    if not text or not isinstance(text, str):
        return None
    addr = ipaddress.ip_address(text)
    return None if addr.is_unspecified else addr


def _checked(check: Any, value: str, what: str) -> Any:
    try:
        return check(value)
    except UnsafeValueError as exc:
        raise DockerError(f"{what}: {exc}") from None
