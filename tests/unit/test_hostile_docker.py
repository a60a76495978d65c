"""Hostile Engine API answers, generated: whoever can create networks and containers controls
names, labels, bridge options, and (through a proxy or a buggy engine) the answer's shape.

Whatever comes: snapshot and compile raise nothing, no value that fails validation reaches
the rendered rules of either backend, and every container on a quarantined network (and
every quarantined container) is dropped from outside, even by a policy that lets anyone
reach every container.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shlex
from typing import Any, cast

import docker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwall.backends.iptables import ipsets, render
from dockwall.backends.nftables import model as nft_model
from dockwall.backends.nftables import render as nft_render
from dockwall.compile.compiler import compile_policy
from dockwall.host import snapshot
from dockwall.model.hoststate import Container, HostState, PublishedPort
from dockwall.model.packets import Outcome, Packet, Route
from dockwall.model.policy import Policy, parse_policy
from dockwall.model.values import IFNAME_PATTERN, Family, Proto
from tests.oracles import iptables_walk as evaluate

MARK = "ZQX"  # in every injection payload, with a character no valid value may have
PAYLOADS = [
    f'x"{MARK}',
    f'"; -j ACCEPT {MARK}',
    f"}} accept; {{ {MARK}",
    f"eth0 -j ACCEPT\n{MARK}",
    f"{MARK}\x00\x1b[2J",
    f"wall0 {MARK}",
    f"10.0.0.0/8 {MARK}",
    f'fe80::1%"{MARK}',
    f"{MARK}é\u202e",
]
OPEN_POLICY = """
version: 1
default: drop
rules:
  - name: anyone
    from: any
  - name: named
    from: [203.0.113.0/24, "2001:db8:200::/48"]
    to: {container: "*"}
    ports: [80]
"""
BRIDGE = snapshot.BRIDGE_NAME_OPTION

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
texts = st.sampled_from(PAYLOADS) | st.text(max_size=30) | st.text(min_size=300, max_size=2000)
names = st.sampled_from(["wallnet", "oddnet", "bridge", "n1"]) | texts
ifnames = st.sampled_from(["wall0", "late0", "br-0", "docker0", 'x"y', "eth0", "+", "a" * 16])
subnets = st.sampled_from(
    ["10.90.0.0/24", "10.91.0.0/24", "fd00:90::/64", "10.1.2.3/33", "fe80::%a/64", "0.0.0.0/0"]
)
addresses = st.sampled_from(
    ["10.90.0.2", "10.91.0.2", "fd00:90::2", "10.90.0.999", 'fe80::1%x"y', "", "::"]
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value, or junk of any type, or the field missing (None drops it below)."""
    return st.one_of(strategy, strategy, junk, st.none())


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({k: maybe(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not None}
    )


networks = obj(
    Id=st.text("0123456789abcdef", min_size=12, max_size=64) | texts,
    Name=names,
    Driver=st.sampled_from(["bridge", "host", "null", "overlay"]) | texts,
    Options=st.dictionaries(st.sampled_from([BRIDGE, "x"]), ifnames | texts, max_size=2),
    IPAM=st.fixed_dictionaries(
        {"Config": st.lists(st.fixed_dictionaries({"Subnet": subnets | texts}), max_size=2)}
    ),
    Extra=junk,
)
endpoint = obj(IPAddress=addresses | texts, GlobalIPv6Address=addresses)
ports = obj(
    IP=addresses,
    PrivatePort=st.integers(-1, 70000),
    PublicPort=st.integers(-1, 70000),
    Type=st.sampled_from(["tcp", "udp", "sctp"]) | texts,
)
containers = obj(
    Id=st.text("0123456789abcdef", min_size=12, max_size=64) | texts,
    Names=st.lists(texts.map(lambda t: "/" + t), max_size=2),
    Labels=st.dictionaries(texts, texts, max_size=3),
    NetworkSettings=st.fixed_dictionaries(
        {"Networks": st.dictionaries(names, endpoint, max_size=3)}
    ),
    Ports=st.lists(ports, max_size=3),
)
answers = st.tuples(st.lists(networks | junk, max_size=6), st.lists(containers | junk, max_size=6))


class _Api:
    def __init__(self, networks: list[Any], containers: list[Any]) -> None:
        self.answers = (networks, containers)

    def networks(self) -> list[Any]:
        return self.answers[0]

    def containers(self, all: bool = False, filters: object = None) -> list[Any]:
        """The running containers; none created but not started (all=True, status=created)."""
        return [] if all else self.answers[1]


class _Client:
    def __init__(self, networks: list[Any], containers: list[Any]) -> None:
        self.api = _Api(networks, containers)


def take(networks: list[Any], containers: list[Any]) -> HostState:
    return snapshot.take(cast(docker.DockerClient, _Client(networks, containers)), "28.5.2")


POLICY = parse_policy(OPEN_POLICY.encode(), "open.yaml")


def iptables_lines(host: HostState, policy: Policy, family: Family) -> tuple[Any, Any]:
    narrowed = compile_policy(policy, host).ruleset.in_family(family)
    return render.render(family, narrowed), ipsets.wanted(family, narrowed)


def assert_safe_iptables(chains: dict[str, list[str]]) -> None:
    """Every line reads back in the rule language (an oracle apart from the renderer), every
    interface is a valid name, and no ACCEPT is ever written."""
    for specs in chains.values():
        for spec in specs:
            evaluate._parse(spec)
            words = shlex.split(spec)
            for flag, value in itertools.pairwise(words):
                if flag in {"-i", "-o"}:
                    assert IFNAME_PATTERN.fullmatch(value.removesuffix("+")), spec
                if flag in {"-s", "-d"}:
                    ipaddress.ip_network(value)
            assert "ACCEPT" not in words and MARK not in spec


QUOTED = re.compile(r'"([^"\n]*)"')
SAFE_QUOTED = re.compile(r"(dockwall:[A-Za-z0-9_.-]{1,48} ?|[A-Za-z0-9_][A-Za-z0-9_.@:*-]{0,15})")


def assert_safe_nft(text: str) -> None:
    assert MARK not in text
    body = text.split("\n", 2)[2]  # after the table line and its fixed comment
    for quoted in QUOTED.findall(body):
        assert SAFE_QUOTED.fullmatch(quoted), quoted
    assert body.count('"') % 2 == 0


def on_quarantined_network(host: HostState) -> list[Container]:
    keys = {q.key for q in host.quarantined if q.kind == "network"}
    return [c for c in host.containers if any(ep.network in keys for ep in c.endpoints)]


def quarantined_addresses(host: HostState) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address dockwall must drop from outside: quarantined containers' own, and every
    address (on any network) of a container on a quarantined network."""
    found = [
        a.network_address for q in host.quarantined if q.kind == "container" for a in q.addresses
    ]
    for container in on_quarantined_network(host):
        for ep in container.endpoints:
            found += [a for a in (ep.ipv4, ep.ipv6) if a is not None]
    return found


def quarantined_ports(host: HostState) -> list[PublishedPort]:
    """Every host port dockwall must drop from outside on docker-proxy's path: those of a
    quarantined container that parse, and all of a container on a quarantined network."""
    found = [p for q in host.quarantined for p in q.ports]
    return found + [p for c in on_quarantined_network(host) for p in c.ports]


HOST_ADDRESS = {
    Family.V4: ipaddress.ip_address("203.0.113.1"),
    Family.V6: ipaddress.ip_address("2001:db8:200::1"),
}


def assert_dropped_from_outside(host: HostState, policy: Policy) -> None:
    for address in quarantined_addresses(host):
        family = Family.of(address)
        chains, sets = iptables_lines(host, policy, family)
        source = ipaddress.ip_address("198.51.100.1" if family is Family.V4 else "2001:db8::1")
        for out in ("x", "docker0", "br-0abc", "wall0"):
            packet = Packet(source, address, "eth0", out, Proto.TCP, 80)
            decision = evaluate.evaluate(chains, packet, sets)
            assert decision.outcome is Outcome.DROPPED, (address, out, decision)
    for port in quarantined_ports(host):
        for net in port.bound():
            family = Family.of(net)
            chains, sets = iptables_lines(host, policy, family)
            source = ipaddress.ip_address("198.51.100.1" if family is Family.V4 else "2001:db8::1")
            dialed = net.network_address if net.prefixlen else HOST_ADDRESS[family]
            packet = Packet(source, dialed, "eth0", "", port.proto, port.host_port, Route.PROXY)
            decision = evaluate.evaluate(chains, packet, sets)
            assert decision.outcome is Outcome.DROPPED, (port, decision)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_hostile_answers_never_escape_nor_reach_rule_text(
    answer: tuple[list[Any], list[Any]],
) -> None:
    check_host(take(*answer))


def test_thousands_of_networks_half_of_them_odd() -> None:
    raw = [
        {
            "Id": f"{i:064x}",
            "Name": f"n{i}",
            "Driver": "bridge",
            "Options": {BRIDGE: f'x"{i}' if i % 2 else f"b{i}"},
            "IPAM": {"Config": [{"Subnet": f"10.{i // 256}.{i % 256}.0/24"}]},
        }
        for i in range(3000)
    ]
    host = take(raw, [])
    assert (len(host.networks), len(host.quarantined)) == (1500, 1500)
    policy = POLICY
    chains, _ = iptables_lines(host, policy, Family.V4)
    assert_safe_iptables(chains)
    # Adjacent odd /24s are not merged (every other one is fine): one drop line each.
    assert sum(" -g DOCKWALL-DEFAULT" in s and "-d " in s for s in chains["DOCKWALL"]) == 1500
    assert_safe_nft(nft_model.text(nft_render.render(compile_policy(policy, host).ruleset)))


GOOD_NET = {
    "Id": "b" * 64,
    "Name": "wallnet",
    "Driver": "bridge",
    "Options": {BRIDGE: "wall0"},
    "IPAM": {"Config": [{"Subnet": "10.91.0.0/24"}, {"Subnet": "fd00:91::/64"}]},
}
GOOD_CONTAINER = {
    "Id": "c" * 64,
    "Names": ["/wall-app"],
    "Labels": {"role": "web"},
    "NetworkSettings": {
        "Networks": {"wallnet": {"IPAddress": "10.91.0.2", "GlobalIPv6Address": "fd00:91::2"}}
    },
    "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 9091, "Type": "tcp"}],
}


def _with(raw: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    if len(path) == 1:
        return {**raw, path[0]: value}
    return {**raw, path[0]: _with(raw[path[0]], path[1:], value)}


NET_FIELDS = [("Name",), ("Id",), ("Options", BRIDGE), ("IPAM", "Config")]
CONTAINER_FIELDS = [
    ("Names",),
    ("Labels",),
    ("NetworkSettings", "Networks", "wallnet", "IPAddress"),
    ("NetworkSettings", "Networks", "wallnet", "GlobalIPv6Address"),
    ("Ports",),
]


def _as_field(path: tuple[str, ...], payload: str) -> object:
    """The payload where the field is: a string, or inside the list or object it holds."""
    last = path[-1]
    shaped: dict[str, object] = {
        "Names": ["/" + payload],
        "Labels": {payload: payload, "com.docker.compose.service": payload},
        "Config": [{"Subnet": payload}],
        "Ports": [{"IP": payload, "PrivatePort": 80, "PublicPort": 9091, "Type": payload}],
    }
    return shaped.get(last, payload)


def test_every_payload_in_every_field_of_a_plausible_answer() -> None:
    """Systematic: each payload in each field of an otherwise valid network and container,
    so a value that parses but isn't safe (an IPv6 zone) can't hide in random junk."""
    for payload in PAYLOADS:
        for path in NET_FIELDS:
            host = take([_with(GOOD_NET, path, _as_field(path, payload))], [GOOD_CONTAINER])
            check_host(host)
        for path in CONTAINER_FIELDS:
            host = take([GOOD_NET], [_with(GOOD_CONTAINER, path, _as_field(path, payload))])
            check_host(host)


def check_host(host: HostState) -> None:
    for family in Family:
        chains, sets = iptables_lines(host, POLICY, family)
        assert_safe_iptables(chains)
        members = [str(m) for found in sets.values() for m in found]
        assert all(ipaddress.ip_network(m) and "%" not in m for m in members), members
    assert_safe_nft(nft_model.text(nft_render.render(compile_policy(POLICY, host).ruleset)))
    assert_dropped_from_outside(host, POLICY)
