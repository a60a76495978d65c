"""Outbound and between containers, with real packets, on every engine and both backends.

The seed's host plus three containers: app (docker0), web and pg (dbnet, pg listening on
5432 and 6000). Outside web servers on the WAN side (198.51.100.10 and 2001:db8:100::10,
ports 8000 and 8001) and the LAN side (203.0.113.5, 2001:db8:200::5, port 8000). The policy
keeps the seed's inbound rules and sets outbound and between to drop, with one rule for each
that this test's oracle (ALLOWED) writes out by hand.

In Docker's own network namespace bridged traffic is first put through the firewall's IP
hooks by nobody (net.bridge.bridge-nf-call-iptables=0, as on a Docker 28 host where
br_netfilter is not loaded): dockwall must turn it on for the between rules on one network
to hold, and turn it off again on remove.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dockwall_sandbox import ContainerInfo, Sandbox, SeededSandbox, Side
from dockwall_sandbox.dockwall_cli import RunningDaemon, dockwall
from dockwall_sandbox.matrix import cases, probe
from dockwall_sandbox.pythonpath import child_env
from dockwall_sandbox.topology import (
    DBNET_V4,
    LAN_HOST1_4,
    LAN_HOST1_6,
    WAN_ADMIN1_4,
    WAN_ADMIN1_6,
)
from tests.integration.firewall import eventually

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
defaults: {inbound: drop, outbound: drop, between: drop}
groups:
  admins: [198.51.100.10, 198.51.100.11, "2001:db8:100::10", "2001:db8:100::11"]
  lan: [203.0.113.0/28, "2001:db8:200::/124"]
rules:
  - name: admins
    from: admins
    via: eth0
  - name: lan
    from: lan
    via: eth1
  - name: app-out
    from: {container: app}
    to: [198.51.100.10, "2001:db8:100::10"]
    ports: [8000/tcp]
  - name: web-pg
    from: {container: web}
    to: {container: pg}
    ports: [5432/tcp]
  - name: www-app
    from: {container: www-nginx}
    to: {container: app}
    ports: [80/tcp]
"""
BRIDGE_KEYS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Call:
    """A connection a container opens: to an outside host, or to a container's address."""

    source: str
    destination: Address
    port: int
    to: str  # what destination is, for people: "outside", or the container's name

    def __str__(self) -> str:
        return f"{self.source} -> {self.to} {self.destination} port {self.port}"


@pytest.fixture(scope="module")
def directions(seeded_sandbox: SeededSandbox) -> Iterator[dict[str, ContainerInfo]]:
    box = seeded_sandbox.sandbox
    found = {
        "app": box.start_container("app", [], listen=[80]),
        "web": box.start_container("web", [], network="dbnet", listen=[80]),
        "pg": box.start_container("pg", [], network="dbnet", listen=[5432, 6000]),
        **{n: box.inspect(n) for n in ("www-nginx", "admin-app")},
    }
    for side, address, port in (
        (Side.WAN, WAN_ADMIN1_4, 8000),
        (Side.WAN, WAN_ADMIN1_6, 8000),
        (Side.WAN, WAN_ADMIN1_4, 8001),
        (Side.WAN, WAN_ADMIN1_6, 8001),
        (Side.LAN, LAN_HOST1_4, 8000),
        (Side.LAN, LAN_HOST1_6, 8000),
    ):
        box.start_outside_server(side, address, port)
    dockwall(box, "remove")
    yield found
    dockwall(box, "remove")
    for name in ("app", "web", "pg"):
        box.remove_container(name)


@pytest.fixture(scope="module")
def plain(seeded_sandbox: SeededSandbox, directions: dict[str, ContainerInfo]) -> dict[Call, bool]:
    """What plain Docker lets through, before any dockwall rule: every call out and every
    pair on one network connects; across networks Docker itself isolates."""
    box = seeded_sandbox.sandbox
    found = calls(directions)
    before = observe(box, found)
    assert all(before[c] for c in found if c.to == "outside"), before
    assert before[next(c for c in found if (c.source, c.to) == ("admin-app", "app"))]
    return before


def calls(found: dict[str, ContainerInfo]) -> list[Call]:
    """Every container to every outside server, and the pairs that matter between them."""
    outside = [
        (a, p)
        for a, p in (
            (WAN_ADMIN1_4, 8000),
            (WAN_ADMIN1_6, 8000),
            (WAN_ADMIN1_4, 8001),
            (LAN_HOST1_4, 8000),
            (LAN_HOST1_6, 8000),
        )
    ]
    out = [
        Call(s, a, p, "outside")
        for s in ("app", "web", "admin-app")
        for a, p in outside
        if a.version == 4 or found[s].ipv6 is not None
    ]
    pairs = [
        ("web", "pg", 5432),  # the rule (dbnet)
        ("web", "pg", 6000),  # not its port
        ("app", "pg", 5432),  # not its container (and across networks)
        ("www-nginx", "app", 80),  # the rule (docker0, the same bridge)
        ("admin-app", "app", 80),  # not its container, the same bridge
        ("app", "www-nginx", 80),  # the rule's reverse
    ]
    between = []
    for src, dst, port in pairs:
        info = found[dst]
        for address in (info.ipv4, info.ipv6):
            if address is not None and (address.version == 4 or found[src].ipv6 is not None):
                between.append(Call(src, address, port, dst))
    return out + between


def allowed(call: Call) -> bool:
    """The policy, by hand."""
    if call.to == "outside":
        return (
            call.source == "app"
            and call.destination in (WAN_ADMIN1_4, WAN_ADMIN1_6)
            and call.port == 8000
        )
    return (call.source, call.to, call.port) in {("web", "pg", 5432), ("www-nginx", "app", 80)}


def observe(box: Sandbox, found: list[Call]) -> dict[Call, bool]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = pool.map(
            lambda c: box.container_fetch(c.source, c.destination, c.port, timeout=2), found
        )
        return dict(zip(found, results, strict=True))


def installed(box: Sandbox) -> str:
    """Every rule of both firewalls, without counters or iptables-save's timestamps."""
    nft = box.run_in_host(["nft", "-s", "list", "ruleset"], as_dockwall=True).stdout
    saved = [ln for ln in box.firewall_dump().splitlines() if not ln.startswith("#")]
    return "\n".join(saved) + nft


def bridge_keys(box: Sandbox) -> list[str]:
    done = box.run_in_host(["sysctl", "-n", *BRIDGE_KEYS], as_dockwall=True)
    return done.stdout.split()


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_outbound_and_between_hold_with_real_packets(
    seeded_sandbox: SeededSandbox, directions: dict[str, ContainerInfo],
    plain: dict[Call, bool], tmp_path: Path, backend: str,
) -> None:  # fmt: skip
    box = seeded_sandbox.sandbox
    box.run_in_host(["sysctl", "-q", "-w", *(f"{k}=0" for k in BRIDGE_KEYS)], as_dockwall=True)
    found, before = calls(directions), plain
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    done = dockwall(box, "apply", "--backend", backend, policy=policy)
    assert done.returncode == 0, done.stderr
    try:
        assert bridge_keys(box) == ["1", "1"]
        observed = observe(box, found)
        wrong = [
            f"{c}: policy says {'open' if allowed(c) else 'closed'}, connection "
            f"{'opened' if observed[c] else 'failed'}"
            for c in found
            if observed[c] != (allowed(c) and before[c])
        ]
        assert not wrong, "\n".join(wrong) + "\n" + box.firewall_dump()
        assert any(observed.values()) and not all(observed.values())
        # Inbound as before (replies to allowed connections flow under outbound: drop), and
        # Docker's embedded DNS still answers container names.
        inbound = [c for c in cases(seeded_sandbox.scenario) if c.path == "published"]
        seen = probe(box, inbound)
        admins = [c for c in inbound if str(c.source).endswith(("::10", ".10"))]
        assert admins and all(seen[c] for c in admins), seen
        assert box.container_resolves("web", "pg")
        # A bad policy changes nothing.
        rules = installed(box)
        bad = tmp_path / "bad.yaml"
        bad.write_text(POLICY.replace("to: {container: pg}", "to: [{container: pg}, any]"))
        refused = dockwall(box, "apply", "--backend", backend, policy=bad)
        assert refused.returncode != 0 and "mixes containers and addresses" in refused.stderr
        assert installed(box) == rules
    finally:
        removed = dockwall(box, "remove")
    assert removed.returncode == 0, removed.stderr
    assert bridge_keys(box) == ["0", "0"]  # turned off again: dockwall had turned them on
    after = observe(box, found)
    assert after == before, json.dumps({str(c): (before[c], after[c]) for c in found})


REUSE_POLICY = """\
version: 1
defaults: {outbound: drop}
rules:
  - name: out-a
    from: {container: out-a}
    to: [198.51.100.10]
    ports: [8000/tcp]
"""


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_reused_address_never_inherits_an_outbound_allowance(
    seeded_sandbox: SeededSandbox, directions: dict[str, ContainerInfo], tmp_path: Path,
    backend: str,
) -> None:  # fmt: skip
    """Under `dockwall run`: out-a may call 198.51.100.10:8000; it goes, and out-b (no rule
    names it) starts with its address: out-b calls out to nothing, once the daemon has seen
    the events, and out-a, back at another address, calls out again."""
    box = seeded_sandbox.sandbox
    policy = tmp_path / "policy.yaml"
    policy.write_text(REUSE_POLICY)
    dockwall(box, "remove")
    daemon = RunningDaemon(box, policy, tmp_path / "dockwall.log", "--backend", backend)
    address = DBNET_V4[60]
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        box.start_container("out-a", [], network="dbnet", listen=[80], ip=address)
        assert eventually(lambda: box.container_fetch("out-a", WAN_ADMIN1_4, 8000)), daemon.log()
        box.docker("rm", "-f", "out-a")
        box.start_container("out-b", [], network="dbnet", listen=[80], ip=address)
        assert daemon.wait_for("container out-b"), daemon.log()
        assert eventually(lambda: not box.container_fetch("out-b", WAN_ADMIN1_4, 8000))
        time.sleep(1)
        assert not box.container_fetch("out-b", WAN_ADMIN1_4, 8000), daemon.log()
        box.start_container("out-a", [], network="dbnet", listen=[80])
        assert eventually(lambda: box.container_fetch("out-a", WAN_ADMIN1_4, 8000)), daemon.log()
        assert not box.container_fetch("out-b", WAN_ADMIN1_4, 8000)
    finally:
        daemon.stop()
        dockwall(box, "remove")
        for name in ("out-a", "out-b"):
            box.docker("rm", "-f", name, check=False)


EXAMPLES = int(os.environ.get("DOCKWALL_PROPERTY_EXAMPLES", "6")) // 2 or 1
SELECTORS = [{"container": "app"}, {"container": "web"}, {"network": "dbnet"},
             {"container": "*-app"}, [{"container": "pg"}, {"container": "www-nginx"}]]  # fmt: skip
OUTSIDE = ["198.51.100.10", "2001:db8:100::10", "203.0.113.0/29", "any", "198.51.100.0/24"]
PORTS = ["8000/tcp", "8001", "80", "5432/tcp", "6000", "5000-8000/tcp"]


@st.composite
def egress_policies(draw: st.DrawFn) -> str:
    rules = []
    for i in range(draw(st.integers(0, 3))):
        between = draw(st.booleans())
        rule: dict[str, object] = {"name": f"e{i}", "from": draw(st.sampled_from(SELECTORS))}
        if between:
            rule["to"] = draw(st.sampled_from([*SELECTORS, "*"]))
        else:
            rule["to"] = draw(st.lists(st.sampled_from(OUTSIDE), min_size=1, max_size=2))
            via = draw(st.sampled_from([None, "eth0", "eth1"]))
            if via:
                rule["via"] = via
        ports = draw(st.none() | st.lists(st.sampled_from(PORTS), min_size=1, max_size=2))
        if ports:
            rule["ports"] = ports
        rules.append(rule)
    defaults = {d: draw(st.sampled_from(["accept", "drop", "reject"])) for d in DIRECTIONS}
    return yaml.safe_dump({"version": 1, "defaults": defaults, "rules": rules})


DIRECTIONS = ("outbound", "between")
FLOW_CHECKER = """
import json, sys
from pathlib import Path
from dockwall.cli import app
from dockwall.compile import flows
from dockwall.model.packets import Outcome
from dockwall.model.values import Proto

policy, docker_host = Path(sys.argv[1]), sys.argv[2]
ctx = app.prepare(policy, docker_host)
kernel = app.backend(app.choose_backend(None, ctx.policy, docker_host))
answers = []
for source, dest, port in json.load(sys.stdin):
    container = flows.source_container(ctx.host, source)
    found = app.check_flows(ctx, kernel, container, dest, port=port, proto=Proto.TCP)
    answers.append([v.decision.outcome is Outcome.ALLOWED for v in found.verdicts]
                   + ([] if found.in_sync else ["out of sync"]))
print(json.dumps(answers))
"""


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy_text=egress_policies())
@example(policy_text=POLICY)
def test_check_from_containers_agrees_with_real_connections(
    seeded_sandbox: SeededSandbox, directions: dict[str, ContainerInfo],
    plain: dict[Call, bool], tmp_path: Path, policy_text: str,
) -> None:  # fmt: skip
    box = seeded_sandbox.sandbox
    found, before = calls(directions), plain
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text)
    done = dockwall(box, "apply", policy=path)
    assert done.returncode == 0, done.stderr + policy_text
    try:
        observed = observe(box, found)
        asked = [[c.source, str(c.destination), c.port] for c in found]
        checked = box.run_in_host(
            [sys.executable, "-c", FLOW_CHECKER, str(path), box.docker_host],
            input=json.dumps(asked),
            env=child_env(),
            timeout=120,
            as_dockwall=True,
        )
        answers = json.loads(checked.stdout)
        wrong = []
        for call, verdicts in zip(found, answers, strict=True):
            assert len(verdicts) == 1, (call, verdicts)  # one connection, the rules in sync
            expected = verdicts[0] is True and before[call]  # and Docker lets it through
            if expected != observed[call]:
                said = "open" if expected else "closed"
                wrong.append(f"{call}: check says {said}, connection {observed[call]}")
        assert not wrong, policy_text + "\n".join(wrong)
    finally:
        dockwall(box, "remove")
