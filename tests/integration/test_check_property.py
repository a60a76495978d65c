"""`dockwall check` agrees with real connections: random policies (groups, interfaces,
selectors, port ranges, both families) applied to the sandbox, every (source, destination,
port) of the seed scenario explained from the installed rules and tried for real.

The explanation runs the same code as `dockwall check` (installed rules read back, the
destination resolved against a Docker snapshot, the packet followed through the chains);
the test only fetches the rules and the snapshot from the sandbox's namespace itself.
DOCKWALL_PROPERTY_EXAMPLES sets how many policies per engine (CI: a bounded few).
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dockwall import explain, snapshot
from dockwall.backends.iptables import evaluate, ipsets, saved
from dockwall.packets import Outcome
from dockwall.policy import parse_policy
from dockwall.values import Family, Proto
from dockwall_sandbox import SeededSandbox
from dockwall_sandbox import topology as topo
from dockwall_sandbox.dockwall_cli import dockwall
from dockwall_sandbox.matrix import Case, cases, probe

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("DOCKWALL_PROPERTY_EXAMPLES", "6"))
SOURCES = [str(a) for link in topo.LINKS for a in link.addresses()]
CIDRS = [
    "198.51.100.0/28",
    "203.0.113.0/29",
    "2001:db8:100::/124",
    "2001:db8:200::/125",
    "198.51.100.96/30",
    "2001:db8:200::98/127",
]
PORTS = ["80", "443/tcp", "8080", "5432", "80-443/tcp", "5000-6000", "80/udp"]
TARGETS = [
    "*",
    {"container": "www-nginx"},
    {"container": "*-app"},
    {"network": "dbnet"},
    {"network": "bridge"},
    [{"container": "db"}, {"container": "admin-app"}],
    {"container": "nothing-matches"},
]


@st.composite
def policies(draw: st.DrawFn) -> str:
    groups = {
        f"g{i}": draw(
            st.lists(st.sampled_from(SOURCES + CIDRS), min_size=1, max_size=4, unique=True)
        )
        for i in range(draw(st.integers(0, 2)))
    }
    rules = []
    for i in range(draw(st.integers(0, 4))):
        rule: dict[str, object] = {
            "name": f"r{i}",
            "from": draw(
                st.one_of(
                    st.just("any"),
                    st.sampled_from(sorted(groups) or ["any"]),
                    st.lists(st.sampled_from(SOURCES + CIDRS), min_size=1, max_size=3, unique=True),
                )
            ),
            "to": draw(st.sampled_from(TARGETS)),
        }
        via = draw(st.sampled_from([None, "eth0", "eth1"]))
        if via:
            rule["via"] = via
        ports = draw(
            st.one_of(
                st.none(), st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True)
            )
        )
        if ports:
            rule["ports"] = ports
        rules.append(rule)
    default = draw(st.sampled_from(["drop", "reject"]))
    return yaml.safe_dump({"version": 1, "default": default, "groups": groups, "rules": rules})


def via_of(source: IPv4Address | IPv6Address) -> str:
    return "eth0" if source in topo.WAN_LINK.addresses() else "eth1"


def predicted(seeded: SeededSandbox, policy_text: str, found: list[Case]) -> dict[Case, bool]:
    """What `dockwall check` says, case by case: allowed and Docker forwards it = open."""
    box = seeded.sandbox
    chains = {
        Family.V4: saved.parse(box.run_in_host(["iptables-save"]).stdout).chains,
        Family.V6: saved.parse(box.run_in_host(["ip6tables-save"]).stdout).chains,
    }
    sets = ipsets.parse(box.run_in_host(["ipset", "save"]).stdout)
    policy = parse_policy(policy_text.encode(), "policy.yaml")
    client = snapshot.connect(box.docker_host)
    host = snapshot.take(client)
    client.close()
    result = {}
    for case in found:
        dest = str(case.destination)
        family = Family.of(case.source)
        targets = explain.targets(host, dest, family, case.port, Proto.TCP)
        assert len(targets) == 1, (case, targets)
        packets = explain.packets(targets, case.source, via_of(case.source))
        decisions = [evaluate.evaluate(chains[family], p, sets) for p in packets]
        verdict = explain.verdicts(targets, decisions, policy, host.docker_version)[0]
        result[case] = (
            verdict.decision.outcome is Outcome.ALLOWED
            and verdict.docker_next.startswith("Docker forwards")
        )
    return result


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy_text=policies())
@example(policy_text=(Path(__file__).parents[2] / "examples" / "policy.yaml").read_text())
def test_check_agrees_with_real_connections(
    seeded_sandbox: SeededSandbox, tmp_path: Path, policy_text: str
) -> None:
    box = seeded_sandbox.sandbox
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text)
    done = dockwall(box, "apply", policy=path)
    assert done.returncode == 0, done.stderr + policy_text
    try:
        found = cases(seeded_sandbox.scenario)
        observed = probe(box, found)
        expected = predicted(seeded_sandbox, policy_text, found)
        wrong = [
            f"{c}: check says {'open' if expected[c] else 'closed'}, connection "
            f"{'opened' if observed[c] else 'failed'}"
            for c in found
            if expected[c] != observed[c]
        ]
        assert not wrong, policy_text + "\n".join(wrong)
    finally:
        dockwall(box, "remove")


def test_check_cli_names_rule_line_and_docker_next(
    seeded_sandbox: SeededSandbox, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text((Path(__file__).parents[2] / "examples" / "policy.yaml").read_text())
    box = seeded_sandbox.sandbox
    assert dockwall(box, "apply", policy=path).returncode == 0
    try:
        done = dockwall(box, "check", "198.51.100.99", "www-nginx", "--port", "443", policy=path)
        assert done.returncode == 0, done.stderr
        assert f"allowed by rule public-web ({path}:15)" in done.stdout
        assert "the installed rules match the policy" in done.stdout
        assert "Docker forwards it to www-nginx:443/tcp" in done.stdout
        done = dockwall(box, "check", "203.0.113.99", "203.0.113.1", "--port", "8080", policy=path)
        assert "dropped by the default" in done.stdout and "arriving on eth1" in done.stdout
        path.write_text(path.read_text().replace("[80/tcp, 443/tcp]", "[80/tcp]"))
        done = dockwall(box, "check", "198.51.100.99", "www-nginx", "--json", policy=path)
        assert '"installed_matches_policy": false' in done.stdout
    finally:
        dockwall(box, "remove")
