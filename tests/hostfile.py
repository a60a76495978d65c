"""Load a HostState from a scenario's host.yaml (test data, not a dockwall input)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from dockwall.model.hoststate import (
    Container,
    Endpoint,
    HostState,
    Network,
    PublishedPort,
    Quarantined,
)
from dockwall.model.values import Proto


def load_host(path: Path) -> HostState:
    data = yaml.safe_load(path.read_text())
    networks = tuple(_network(n) for n in data.get("networks", []))
    containers = tuple(_container(c) for c in data.get("containers", []))
    interfaces = frozenset(data.get("interfaces", []))
    odd = tuple(_quarantined(q) for q in data.get("quarantined", []))
    version = str(data.get("docker_version", "test"))
    return HostState(containers, networks, interfaces, version, odd)


def _quarantined(raw: dict[str, Any]) -> Quarantined:
    addresses = tuple(ipaddress.ip_network(a) for a in raw.get("addresses", []))
    ports = tuple(_port(p) for p in raw.get("ports", []))
    return Quarantined(
        raw["kind"],
        raw["name"],
        raw["reason"],
        addresses,
        raw.get("key"),
        raw.get("bridge"),
        ports,
    )


def _network(raw: dict[str, Any]) -> Network:
    subnets = tuple(ipaddress.ip_network(s) for s in raw.get("subnets", []))
    return Network(
        raw.get("id", raw["name"]),
        raw["name"],
        raw.get("driver", "bridge"),
        raw.get("bridge"),
        subnets,
    )


def _container(raw: dict[str, Any]) -> Container:
    endpoints = tuple(
        Endpoint(
            e["network"],
            ipaddress.ip_address(e["ipv4"]) if e.get("ipv4") else None,
            ipaddress.ip_address(e["ipv6"]) if e.get("ipv6") else None,
        )
        for e in raw.get("endpoints", [])
    )
    ports = tuple(_port(p) for p in raw.get("ports", []))
    return Container(
        raw.get("id", raw["name"]), raw["name"], raw.get("labels", {}), endpoints, ports
    )


def _port(text: str) -> PublishedPort:
    mapping, _, proto = text.partition("/")
    host, _, inside = mapping.partition(":")
    return PublishedPort(None, int(host), int(inside), Proto(proto or "tcp"))
