"""Take a HostState from the Docker Engine API (through the Docker SDK) and the host's links.

This is the only module that reads Docker. Everything it returns is validated: addresses are
ipaddress objects (without IPv6 zones), bridge names pass the interface-name check, ports are
ints. An object with a value that fails is quarantined (HostState.quarantined), not fatal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from dockwall.errors import DockerError, UnsafeValueError
from dockwall.host import proxy_sockets
from dockwall.model.hoststate import (
    Container,
    Endpoint,
    HostState,
    Network,
    PublishedPort,
    Quarantined,
)
from dockwall.model.values import Family, IPAddress, IPNetwork, Proto, checked_ifname

log = logging.getLogger(__name__)

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
API_TIMEOUT = 10  # seconds, for every Engine API call
# A created container's inspect waits while Docker starts it (Docker holds the container's
# lock for the whole start, ~0.3-0.6 s): the snapshot must not wait with it, or the events
# before (a die, say) reach the kernel that much later. Left out, it is governed at start.
CREATED_INSPECT_TIMEOUT = 0.1  # seconds
T = TypeVar("T")


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
    Pass the engine version if known, to save an API call. Raises DockerError only when Docker
    can't be read; an object with a value that doesn't parse or isn't safe is quarantined."""
    try:
        if version is None:
            version = engine_version(client)
        raw_networks = _listed(client.api.networks())
        raw_containers = _listed(client.api.containers())
        starting = _starting(client)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"cannot read Docker: {exc}") from None
    networks, odd_networks = _each(raw_networks, _network, _odd_network)
    containers, odd_containers = _each(raw_containers, _container, _odd_container)
    containers += starting
    quarantined = (*odd_networks, *odd_containers)
    proxy = proxy_sockets.find(_socket_path(client))
    return HostState(containers, networks, host_interfaces(), version, quarantined, proxy)


_HEX_ID = re.compile(r"[0-9a-f]{64}")  # a container's id as Docker gives it


def update(client: docker.DockerClient, host: HostState, ids: Collection[str]) -> HostState:
    """host with the containers `ids` read again and the rest as they were: for events about
    those containers, one listing of them instead of every container's. The same listings
    as take (running, and created not started), filtered by id. Raises DockerError as take."""
    wanted = sorted({i for i in ids if _HEX_ID.fullmatch(i)})
    try:
        raw = _listed(client.api.containers(filters={"id": wanted}))
        filters = {"status": "created", "id": wanted}
        created = _listed(client.api.containers(all=True, filters=filters))
        starting = _created_of(client, created)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"cannot read Docker: {exc}") from None
    asked = set(wanted)  # (Docker's id filter matches prefixes)
    found, odd = _each(raw, _container, _odd_container)
    fresh = tuple(c for c in (*found, *starting) if c.id in asked)
    kept = tuple(c for c in host.containers if c.id not in asked)
    quarantined = tuple(q for q in host.quarantined if q.container_id not in asked)
    odd = tuple(q for q in odd if q.container_id in asked)
    return replace(host, containers=(*kept, *fresh), quarantined=(*quarantined, *odd))


def without(host: HostState, ids: Collection[str]) -> HostState:
    """host without the containers `ids` (ones known to have died since they were listed)."""
    if not ids or not any(c.id in ids for c in host.containers):
        return host
    return replace(host, containers=tuple(c for c in host.containers if c.id not in ids))


def clashes(host: HostState, ids: Collection[str]) -> bool:
    """Whether a container of `ids` has an address or a host port that another container of
    host also has: one of them is stale (it stopped, and no event or listing said so yet), so
    reading only `ids` again is not enough. Docker hands an address, or a host port, to a new
    container only once the old one let it go."""
    read = [c for c in host.containers if c.id in ids]
    if not read:
        return False
    claims = {claim for c in read for claim in _claims(c)}
    return any(not claims.isdisjoint(_claims(c)) for c in host.containers if c.id not in ids)


def _claims(container: Container) -> set[object]:
    addresses = {a for ep in container.endpoints for a in (ep.ipv4, ep.ipv6) if a is not None}
    ports = {(p.host_ip, p.host_port, p.proto) for p in container.ports}
    return {*addresses, *ports}


def _socket_path(client: docker.DockerClient) -> str | None:
    """The API's unix socket, if that is how Docker is reached."""
    try:
        adapter = client.api.get_adapter(client.api.base_url)
    except (AttributeError, requests.exceptions.RequestException):
        return None
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) else None


def _listed(answer: object) -> list[object]:
    if not isinstance(answer, list):
        raise DockerError(f"unexpected answer from Docker: a {type(answer).__name__}, not a list")
    return answer


def _each(
    raws: list[object],
    parse: Callable[[Mapping[str, Any]], T],
    odd: Callable[[object, str], Quarantined],
) -> tuple[tuple[T, ...], tuple[Quarantined, ...]]:
    """Every object parsed; those that can't be (missing fields, wrong types, unsafe values)
    quarantined instead, so one odd object never stops the rest from being governed."""
    good: list[T] = []
    bad: list[Quarantined] = []
    for raw in raws:
        try:
            if not isinstance(raw, Mapping):
                raise TypeError(f"a {type(raw).__name__}, not an object")
            good.append(parse(raw))
        except (UnsafeValueError, KeyError, ValueError, TypeError, AttributeError) as exc:
            bad.append(odd(raw, _reason(exc)))
    return tuple(good), tuple(bad)


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
    net_id = _text(raw["Id"])
    name = _text(raw["Name"])
    driver = _text(raw.get("Driver", ""))
    bridge = None
    if driver == "bridge":
        options = raw.get("Options") or {}
        bridge = checked_ifname(_text(options.get(BRIDGE_NAME_OPTION) or f"br-{net_id[:12]}"))
    subnets = tuple(_subnet(config.get("Subnet")) for config in _ipam(raw))
    return Network(net_id, name, driver, bridge, tuple(s for s in subnets if s is not None))


def _ipam(raw: object) -> list[Mapping[str, Any]]:
    ipam = raw.get("IPAM") if isinstance(raw, Mapping) else None
    configs = ipam.get("Config") if isinstance(ipam, Mapping) else None
    return [c for c in configs or () if isinstance(c, Mapping)]


def _subnet(text: object) -> IPNetwork | None:
    if not text:
        return None
    net = ipaddress.ip_network(_text(text), strict=False)
    _unscoped(net.network_address)
    return net


def _odd_network(raw: object, reason: str) -> Quarantined:
    """The subnets that do parse (Docker's IPAM), so traffic to them can still be dropped."""
    subnets = []
    for config in _ipam(raw):
        try:
            subnets.append(_subnet(config.get("Subnet")))
        except (UnsafeValueError, ValueError, TypeError):
            continue
    name = raw.get("Name") if isinstance(raw, Mapping) else None
    key = name if isinstance(name, str) else None
    found = tuple(s for s in subnets if s is not None)
    return Quarantined("network", _label(name), reason, found, key, _safe_bridge(raw))


def _safe_bridge(raw: object) -> str | None:
    """The bridge of a quarantined network, if its name is still safe to write."""
    try:
        network = _network({**raw, "IPAM": None}) if isinstance(raw, Mapping) else None
    except (UnsafeValueError, KeyError, ValueError, TypeError, AttributeError):
        return None
    return network.bridge if network else None


def _container(raw: Mapping[str, Any]) -> Container:
    cid = _text(raw["Id"])
    names = raw.get("Names") or [cid[:12]]
    name = _text(names[0]).lstrip("/")
    labels = {_text(k): _text(v) for k, v in (raw.get("Labels") or {}).items()}
    endpoints = tuple(
        Endpoint(
            _text(net_name),
            _address(ep.get("IPAddress")),
            _address(ep.get("GlobalIPv6Address")),
        )
        for net_name, ep in _endpoints(raw).items()
    )
    ports = _merged(p for p in (_port(raw_port) for raw_port in raw.get("Ports") or []) if p)
    return Container(cid, name, labels, endpoints, ports)


def _starting(client: docker.DockerClient) -> tuple[Container, ...]:
    """Containers created and not started yet, with the host ports they will be published
    on (from their configuration): governed on docker-proxy's path before it listens. One
    that can't be read (gone meanwhile, an odd value, or being started right now, see
    CREATED_INSPECT_TIMEOUT) is left out: it has no address yet, and its start event
    brings it in."""
    listed = _listed(client.api.containers(all=True, filters={"status": "created"}))
    return _created_of(client, listed)


def _created_of(client: docker.DockerClient, listed: list[object]) -> tuple[Container, ...]:
    """The containers of a listing of created ones, each inspected (see _starting)."""
    if not listed:
        return ()
    found = []
    with _timeout(client.api, CREATED_INSPECT_TIMEOUT):
        for raw in listed:
            try:
                cid = _text(raw["Id"]) if isinstance(raw, Mapping) else _text(raw)
                found.append(_created(client.api.inspect_container(cid)))
            except docker.errors.NotFound:
                continue
            except requests.exceptions.Timeout:
                log.debug("created container left out: being started, governed at its start")
            except (UnsafeValueError, KeyError, ValueError, TypeError, AttributeError) as exc:
                log.debug("created container left out: %s", _reason(exc))
    return tuple(found)


@contextlib.contextmanager
def _timeout(api: docker.APIClient, seconds: float) -> Iterator[None]:
    """The client's timeout for the calls inside (the SDK reads it per request; a client is
    used by one thread: the snapshot's)."""
    before = api.timeout
    api.timeout = seconds  # type: ignore[assignment]  # the stubs say int; requests takes float
    try:
        yield
    finally:
        api.timeout = before


def _created(detail: Mapping[str, Any]) -> Container:
    cid = _text(detail["Id"])
    name = _text(detail["Name"]).lstrip("/")
    config = detail.get("Config") or {}
    labels = {_text(k): _text(v) for k, v in (config.get("Labels") or {}).items()}
    bindings = (detail.get("HostConfig") or {}).get("PortBindings") or {}
    ports = [p for key, binds in bindings.items() for p in _bound(_text(key), binds or [])]
    return Container(cid, name, labels, (), _merged(ports), running=False)


def _bound(key: str, binds: list[Mapping[str, Any]]) -> list[PublishedPort]:
    """A configured binding ("80/tcp": [{"HostIp": "", "HostPort": "9090"}]); a host port
    Docker picks at start (empty) is not known yet."""
    port_text, _, proto = key.partition("/")
    if (proto or "tcp") not in {p.value for p in Proto}:
        return []
    found = []
    for bind in binds:
        host_port, host_ip = bind.get("HostPort"), bind.get("HostIp") or None
        if not host_port:
            continue
        unspecified = _unspecified(host_ip)
        families = frozenset(Family) if unspecified is None else frozenset({unspecified})
        found.append(
            PublishedPort(
                _address(host_ip),
                _number(_digits(host_port)),
                _number(_digits(port_text)),
                Proto(proto or "tcp"),
                families,
            )
        )
    return found


def _endpoints(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    settings = raw.get("NetworkSettings") or {}
    return settings.get("Networks") or {}


def _odd_container(raw: object, reason: str) -> Quarantined:
    """The addresses and published ports that do parse: the container is dropped from
    outside at each of its addresses, and at each of its host ports on docker-proxy's path."""
    found = []
    try:
        endpoints = _endpoints(raw) if isinstance(raw, Mapping) else {}
        values = [e for ep in endpoints.values() for e in _address_fields(ep)]
    except (AttributeError, TypeError):
        values = []
    for value in values:
        try:
            found.append(_address(value))
        except (UnsafeValueError, ValueError, TypeError):
            continue
    names = raw.get("Names") if isinstance(raw, Mapping) else None
    first = names[0] if isinstance(names, list) and names else None
    nets = tuple(ipaddress.ip_network(a) for a in found if a is not None)
    cid = raw.get("Id") if isinstance(raw, Mapping) else None
    known = cid if isinstance(cid, str) and _HEX_ID.fullmatch(cid) else None
    return Quarantined(
        "container", _label(first), reason, nets, ports=_salvaged_ports(raw), container_id=known
    )


def _salvaged_ports(raw: object) -> tuple[PublishedPort, ...]:
    """Each published port of a list answer that parses on its own."""
    listed = raw.get("Ports") if isinstance(raw, Mapping) else None
    found = []
    for entry in listed if isinstance(listed, list) else ():
        try:
            port = _port(entry) if isinstance(entry, Mapping) else None
        except (UnsafeValueError, KeyError, ValueError, TypeError, AttributeError):
            continue
        if port is not None:
            found.append(port)
    return _merged(found)


def _address_fields(ep: object) -> list[object]:
    if not isinstance(ep, Mapping):
        return []
    return [ep.get("IPAddress"), ep.get("GlobalIPv6Address")]


def _port(raw: Mapping[str, Any]) -> PublishedPort | None:
    public = raw.get("PublicPort")
    proto = raw.get("Type", "tcp")
    if not public or proto not in {p.value for p in Proto}:
        return None
    bound = raw.get("IP")
    unspecified = _unspecified(bound)
    families = frozenset(Family) if unspecified is None else frozenset({unspecified})
    return PublishedPort(
        _address(bound), _number(public), _number(raw["PrivatePort"]), Proto(proto), families
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
    if not text:
        return None
    addr = _unscoped(ipaddress.ip_address(_text(text)))
    return None if addr.is_unspecified else addr


def _unscoped(addr: IPAddress) -> IPAddress:
    """An IPv6 zone ("fe80::1%eth0") is free text that str() would carry into rule text."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise UnsafeValueError(f"{_label(str(addr))} has a zone index")
    return addr


def _text(value: object) -> str:
    """A string field: anything else (a number, a list, null) is not what the API returns."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got a {type(value).__name__}")
    return value


def _digits(value: object) -> int:
    """A port as inspect writes it, in text ("9090")."""
    text = _text(value)
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"expected a port number, got {_label(text)}")
    return int(text)


def _number(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"expected a port number, got {_label(repr(value))}")
    return value


def _label(value: object) -> str:
    """A name for people: printable characters only, at most 64 of them."""
    text = value if isinstance(value, str) else "(unnamed)"
    shown = "".join(c if c.isprintable() else "?" for c in text.lstrip("/"))
    return shown[:64] + ("..." if len(shown) > 64 else "")


def _reason(exc: Exception) -> str:
    missing = isinstance(exc, KeyError)
    return _label(f"field {exc} missing" if missing else str(exc))
