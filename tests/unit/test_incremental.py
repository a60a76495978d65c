"""recompile == compile_policy, over random hosts, policies and event sequences (containers
starting, stopping, restarting at a new address, relabelled, moved to another network)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dockwall.compile.compiler import compile_policy
from dockwall.compile.incremental import changed_containers, recompile
from dockwall.model.hoststate import Container, Endpoint, HostState, Network, PublishedPort
from dockwall.model.policy import Policy, parse_policy
from dockwall.model.values import Proto

NETWORKS = (
    Network("n0", "bridge", "bridge", "docker0", (ipaddress.ip_network("192.0.2.0/26"),)),
    Network("n1", "back", "bridge", "br-back", (ipaddress.ip_network("192.0.2.64/26"),)),
    Network("n2", "hostnet", "host", None),
)
NAMES = ["web", "web-2", "db", "app", "cache", "worker"]
LABELS = [{}, {"role": "front"}, {"role": "back"}, {"public": "yes"}]
SELECTORS: list[object] = [
    {"container": "web"},
    {"container": "web*"},
    {"label": "role=front"},
    {"label": "public"},
    {"network": "back"},
    [{"container": "db"}, {"container": "app"}],
]


@st.composite
def containers(draw: st.DrawFn, number: int) -> Container:
    network = draw(st.sampled_from(["bridge", "back"]))
    base = 0 if network == "bridge" else 64
    address = ipaddress.ip_address(f"192.0.2.{base + draw(st.integers(2, 40))}")
    six = ipaddress.ip_address(f"2001:db8:d0c::{draw(st.integers(2, 40)):x}")
    ports = tuple(
        PublishedPort(None, p, p, Proto.TCP)
        for p in draw(st.lists(st.sampled_from([80, 443, 5432, 8080]), unique=True, max_size=2))
    )
    return Container(
        f"{number:064x}",
        draw(st.sampled_from(NAMES)),
        draw(st.sampled_from(LABELS)),
        (Endpoint(network, address, draw(st.none() | st.just(six))),),
        ports,
        running=draw(st.booleans()),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    rules: list[dict[str, object]] = []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["in", "in-any", "out", "between"]))
        selector = draw(st.sampled_from(SELECTORS))
        rule: dict[str, object] = {"name": f"r{i}", "log": draw(st.booleans())}
        if kind == "in":
            rule |= {"from": "any", "to": selector}
        elif kind == "in-any":
            rule |= {"from": ["198.51.100.0/24"], "via": "eth9"}
        elif kind == "out":
            rule |= {"from": selector, "to": ["203.0.113.0/24"], "ports": ["443"]}
        else:
            rule |= {"from": selector, "to": draw(st.sampled_from([*SELECTORS, "*"]))}
        rules.append(rule)
    doc = {"version": 1, "defaults": {"outbound": "drop", "between": "reject"}, "rules": rules}
    return parse_policy(yaml.safe_dump(doc).encode(), "p.yaml")


EVENTS = st.sampled_from(["start", "stop", "remove", "readdress", "relabel", "move", "nothing"])


@settings(max_examples=300, deadline=None)
@given(
    policies(),
    st.lists(containers(1000), max_size=0),  # (placeholder for shrinking order)
    st.data(),
)
def test_recompile_equals_a_full_compile_at_every_step(
    policy: Policy, _: list[Container], data: st.DataObject
) -> None:
    found = [data.draw(containers(n)) for n in range(data.draw(st.integers(0, 8)))]
    host = HostState(tuple(found), NETWORKS, frozenset({"lo", "eth0", "docker0", "br-back"}))
    compiled = compile_policy(policy, host)
    for step in range(data.draw(st.integers(1, 12))):
        after = _event(data, host, data.draw(EVENTS), 100 + step)
        again = recompile(policy, host, compiled, after)
        full = compile_policy(policy, after)
        assert (again.ruleset, again.warnings) == (full.ruleset, full.warnings)
        host, compiled = after, again


def _event(data: st.DataObject, host: HostState, what: str, number: int) -> HostState:
    running = list(host.containers)
    if what == "start" or not running:
        return replace(host, containers=(*running, data.draw(containers(number))))
    index = data.draw(st.integers(0, len(running) - 1))
    one = running[index]
    if what == "stop":
        running[index] = replace(one, running=not one.running)
    elif what == "remove":
        del running[index]
    elif what == "readdress":
        ep = one.endpoints[0]
        moved = ipaddress.ip_address(int(ep.ipv4 or ipaddress.ip_address("192.0.2.2")) + 1)
        running[index] = replace(one, endpoints=(replace(ep, ipv4=moved),))
    elif what == "relabel":
        running[index] = replace(one, labels=data.draw(st.sampled_from(LABELS)))
    elif what == "move":
        network = "back" if one.endpoints[0].network == "bridge" else "bridge"
        running[index] = replace(one, endpoints=(replace(one.endpoints[0], network=network),))
    return replace(host, containers=tuple(running))


def test_only_the_rules_a_changed_container_concerns_are_compiled_again() -> None:
    policy = parse_policy(
        b"version: 1\nrules:\n- {name: web, from: any, to: {container: web}}\n"
        b"- {name: db, from: any, to: {container: db}}\n",
        "p.yaml",
    )
    ip = ipaddress.ip_address
    web = Container("a" * 64, "web", {}, (Endpoint("bridge", ip("192.0.2.2"), None),))
    db = Container("b" * 64, "db", {}, (Endpoint("back", ip("192.0.2.66"), None),))
    host = HostState((web, db), NETWORKS, frozenset())
    compiled = compile_policy(policy, host)
    moved = replace(web, endpoints=(Endpoint("bridge", ip("192.0.2.3"), None),))
    after = replace(host, containers=(moved, db))
    assert changed_containers(host, after) == [web, moved]
    again = recompile(policy, host, compiled, after)
    assert again.parts[1] is compiled.parts[1]  # db's rule: reused as it was
    assert again.parts[0] is not compiled.parts[0]
    assert again.ruleset == compile_policy(policy, after).ruleset
