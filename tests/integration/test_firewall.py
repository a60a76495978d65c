"""The seed's scenario with real packets: what the policy allows connects, the rest does not.

The iptables backend, on every engine: on Docker 29's nftables firewall backend too, where
`auto` would pick nftables (test_auto_picks_the_backend_docker_uses) and there is no
DOCKER-USER, so dockwall's jump sits at the top of iptables' own FORWARD base chain, where a
drop is final as in any base chain. Each engine gets one sandbox (module-scoped fixture);
every test leaves the host as it found it (dockwall removed, extra containers gone).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv6Network
from ipaddress import ip_address as addr
from pathlib import Path

import pytest

from dockwall.backends.nftables.docker import NOT_REPORTED
from dockwall_sandbox import Sandbox, Scenario, SeededSandbox, Side
from dockwall_sandbox.dockwall_cli import dockwall as run_dockwall
from dockwall_sandbox.image import IMAGE
from dockwall_sandbox.matrix import Case, cases, probe
from dockwall_sandbox.topology import WAN_ADMIN1_6, WAN_STRANGER_6
from tests.integration.firewall import mismatches

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
ADMINS = {
    addr(a) for a in ("198.51.100.10", "198.51.100.11", "2001:db8:100::10", "2001:db8:100::11")
}
LAN = {addr(a) for a in ("203.0.113.5", "203.0.113.6", "2001:db8:200::5", "2001:db8:200::6")}
WAN_STRANGERS = {addr("198.51.100.99"), addr("2001:db8:100::99")}
BACKEND_COMMANDS = ("apply", "plan", "status", "check")
EMPTY_TABLE = ["*filter", ":INPUT ACCEPT ", ":FORWARD ACCEPT ", ":OUTPUT ACCEPT ", "COMMIT"]


def dockwall(
    sandbox: Sandbox, *args: str, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The dockwall command with the iptables backend unless the test names one."""
    if args[0] in BACKEND_COMMANDS and "--backend" not in args:
        args = (*args, "--backend", "iptables")
    return run_dockwall(sandbox, *args, policy=policy)


def example_policy_allows(case: Case) -> bool:
    """The example policy, written out by hand as the test's oracle."""
    if case.source in ADMINS or case.source in LAN:
        return True
    return case.source in WAN_STRANGERS and case.container == "www-nginx" and case.port in (80, 443)


def saved_rules(seeded: SeededSandbox) -> str:
    """iptables-save and ip6tables-save of the Docker host, without counters or comments.

    A filter table with nothing in it (the built-in chains, policy ACCEPT, no rule) counts as
    none: that is what is left on Docker's nftables backend, which writes no iptables rule,
    after dockwall's iptables rules were removed, and it lets everything pass, as no table."""
    dump = seeded.sandbox.firewall_dump()
    lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in dump.splitlines()]
    kept = [line for line in lines if line and not line.startswith("#")]
    for start in range(len(kept) - len(EMPTY_TABLE), -1, -1):
        if kept[start : start + len(EMPTY_TABLE)] == EMPTY_TABLE:
            del kept[start : start + len(EMPTY_TABLE)]
    return "\n".join(kept)


@pytest.fixture(scope="module")
def baseline(seeded_sandbox: SeededSandbox) -> dict[Case, bool]:
    """What plain Docker lets through, before any dockwall rule."""
    dockwall(seeded_sandbox.sandbox, "remove")
    observed = probe(seeded_sandbox.sandbox, cases(seeded_sandbox.scenario))
    published = [c for c in observed if c.path == "published"]
    assert published and all(observed[c] for c in published), "harness: Docker not publishing"
    return observed


@pytest.fixture
def host(
    seeded_sandbox: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> Iterator[SeededSandbox]:
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    yield seeded_sandbox
    dockwall(seeded_sandbox.sandbox, "remove")
    for name in ("late", "late-web"):
        seeded_sandbox.sandbox.docker("rm", "-f", name, check=False)


def apply(seeded: SeededSandbox, policy: Path) -> str:
    done = dockwall(seeded.sandbox, "apply", policy=policy)
    assert done.returncode == 0, done.stderr + seeded.sandbox.firewall_dump()
    return done.stdout


def test_seed_policy_every_source_port_family_and_path(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    apply(host, tmp_path / "policy.yaml")
    observed = probe(host.sandbox, list(baseline))
    wrong = mismatches(observed, lambda c: baseline[c] and example_policy_allows(c))
    assert not wrong, "\n".join(wrong) + "\n" + host.sandbox.firewall_dump()
    # The matrix must exercise both verdicts in both families, or it proves little.
    for version in (4, 6):
        family = [c for c in observed if c.source.version == version]
        assert any(observed[c] for c in family) and not all(observed[c] for c in family)


def test_egress_and_container_to_container_still_work(host: SeededSandbox, tmp_path: Path) -> None:
    apply(host, tmp_path / "policy.yaml")
    box, www = host.sandbox, host.scenario["www-nginx"]
    assert box.container_egress("admin-app", family=4)
    assert box.container_egress("db", family=6)
    assert box.container_to_container("admin-app", www, 80, family=4)
    assert box.container_to_container("admin-app", www, 80, family=6)


def test_apply_twice_changes_nothing_and_plan_agrees(host: SeededSandbox, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    apply(host, policy)
    before = saved_rules(host)
    assert "nothing to do" in apply(host, policy)
    assert saved_rules(host) == before
    plan = dockwall(host.sandbox, "plan", policy=policy)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_plan_shows_pending_changes_and_touches_nothing(
    host: SeededSandbox, tmp_path: Path
) -> None:
    before = saved_rules(host)
    plan = dockwall(host.sandbox, "plan", "--json", policy=tmp_path / "policy.yaml")
    assert plan.returncode == 2, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["pending"] and {f["family"] for f in doc["families"]} == {"ipv4", "ipv6"}
    assert any("-A DOCKWALL-DEFAULT -j DROP" in line for line in doc["families"][0]["add"])
    assert saved_rules(host) == before


def test_container_started_after_apply_is_closed_except_to_star_rules(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    apply(host, tmp_path / "policy.yaml")
    late = host.sandbox.start_container("late", [(9000, 80)])
    observed = probe(host.sandbox, cases(Scenario({late.name: late})))
    direct_open = any(ok for c, ok in baseline.items() if c.path == "direct")

    def expected(case: Case) -> bool:
        engine_lets_through = case.path == "published" or direct_open
        return engine_lets_through and (case.source in ADMINS or case.source in LAN)

    wrong = mismatches(observed, expected)
    assert not wrong, "\n".join(wrong) + "\n" + host.sandbox.firewall_dump()
    assert any(observed.values())


def test_remove_gives_back_plain_docker(
    host: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    before = saved_rules(host)
    apply(host, tmp_path / "policy.yaml")
    assert "DOCKWALL" in saved_rules(host)
    done = dockwall(host.sandbox, "remove")
    assert done.returncode == 0 and "removed" in done.stdout
    assert saved_rules(host) == before
    observed = probe(host.sandbox, list(baseline))
    assert observed == baseline


def test_invalid_policy_is_refused_and_changes_nothing(host: SeededSandbox, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    apply(host, policy)
    before = saved_rules(host)
    policy.write_text(policy.read_text().replace("from: lan", "from: lna"))
    done = dockwall(host.sandbox, "apply", policy=policy)
    assert done.returncode == 1
    assert "rule 'lan': from: unknown group 'lna'" in done.stderr
    assert f"{policy}:13" in done.stderr
    assert saved_rules(host) == before


def test_failed_kernel_write_leaves_previous_rules(host: SeededSandbox, tmp_path: Path) -> None:
    """A transaction the kernel refuses (here: a chain dockwall must delete is still used by a
    rule someone else added) is refused whole: the previous rules stay."""
    policy = tmp_path / "policy.yaml"
    apply(host, policy)
    host.sandbox.run_in_host(["iptables", "-A", "INPUT", "-j", "DOCKWALL-C1"])
    try:
        before = saved_rules(host)
        policy.write_text("version: 1\nrules:\n  - {name: admins, from: 198.51.100.10}\n")
        done = dockwall(host.sandbox, "apply", policy=policy)
        assert done.returncode == 1 and "iptables-restore" in done.stderr
        assert "nothing was changed" in done.stderr
        assert saved_rules(host) == before
    finally:
        host.sandbox.run_in_host(["iptables", "-D", "INPUT", "-j", "DOCKWALL-C1"])


def test_status_shows_who_reaches_what(host: SeededSandbox, tmp_path: Path) -> None:
    apply(host, tmp_path / "policy.yaml")
    done = dockwall(host.sandbox, "status", "--json", policy=tmp_path / "policy.yaml")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["installed_matches_policy"] is True
    ports = {(c["name"], p["host_port"]): p for c in doc["containers"] for p in c["ports"]}
    assert ports[("www-nginx", 80)]["public"] is True
    assert {r["name"] for r in ports[("www-nginx", 443)]["rules"]} == {
        "admins",
        "lan",
        "public-web",
    }
    assert ports[("db", 5432)]["public"] is False
    assert {r["name"] for r in ports[("db", 5432)]["rules"]} == {"admins", "lan"}


def test_plan_speaks_in_policy_terms_and_status_says_when(
    host: SeededSandbox, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    apply(host, policy)
    policy.write_text(policy.read_text().replace("[80/tcp, 443/tcp]", "[80/tcp]"))
    plan = dockwall(host.sandbox, "plan", policy=policy)
    assert plan.returncode == 2, plan.stderr
    assert "rule public-web updated (ports 80/tcp,443/tcp -> 80/tcp)" in plan.stdout
    assert "www-nginx 443/tcp: no longer reachable by public-web (anyone via eth0)" in plan.stdout
    assert "-A DOCKWALL" not in plan.stdout  # the raw rules only with --verbose
    verbose = dockwall(host.sandbox, "plan", "--verbose", policy=policy)
    assert "- -A DOCKWALL-C1 -i eth0 -p tcp -m conntrack --ctorigdstport 443" in verbose.stdout
    status = dockwall(host.sandbox, "status", policy=policy)
    assert "installed rules match it: NO" in status.stdout
    assert "applied 20" in status.stdout
    assert "\x1b[" not in status.stdout  # no colour codes when piped


def test_large_group_is_an_ipset_swapped_on_change(host: SeededSandbox, tmp_path: Path) -> None:
    """A group above the set threshold is one ipset match; changing the group swaps the set
    (the rules stay as they are); remove leaves no set behind."""
    box = host.sandbox
    many = [f"198.51.100.{n}" for n in range(20, 40)] + ["198.51.100.10", "198.51.100.11"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ngroups:\n  office: [" + ", ".join(many) + "]\nrules:\n"
        "  - {name: office, from: office, via: eth0}\n"
    )
    apply(host, policy)
    assert "--match-set dw4-office src" in saved_rules(host)
    wan = addr("198.51.100.1")
    cases = [
        (addr("198.51.100.10"), wan, 8080),
        (addr("198.51.100.11"), wan, 8080),
        (addr("198.51.100.99"), wan, 8080),
    ]
    assert box.probe_auto(cases) == [True, True, False]
    rules_before = [ln for ln in saved_rules(host).splitlines() if "DOCKWALL" in ln]
    policy.write_text(policy.read_text().replace(", 198.51.100.11]", "]"))
    apply(host, policy)
    assert [ln for ln in saved_rules(host).splitlines() if "DOCKWALL" in ln] == rules_before
    assert box.probe_auto(cases) == [True, False, False]
    sets = box.run_in_host(["ipset", "list", "-n"]).stdout.split()
    assert sets == ["dw4-office"], sets
    dockwall(box, "remove")
    assert box.run_in_host(["ipset", "list", "-n"]).stdout.split() == []


def test_containers_are_class_sets_and_remove_leaves_none(host: SeededSandbox) -> None:
    """The seed's containers are found through one ipset per class and family; remove
    deletes them with the rules."""
    box = host.sandbox
    apply(host, EXAMPLE)
    sets = box.run_in_host(["ipset", "list", "-n"]).stdout.split()
    assert sorted(s[:5] for s in sets) == ["dwc4-", "dwc6-"], sets
    assert "--match-set dwc4-" in saved_rules(host)
    dockwall(box, "remove")
    assert box.run_in_host(["ipset", "list", "-n"]).stdout.split() == []


def test_switching_backend_leaves_one_set_of_rules(host: SeededSandbox, tmp_path: Path) -> None:
    box = host.sandbox
    policy = tmp_path / "policy.yaml"
    done = dockwall(box, "apply", "--backend", "nftables", policy=policy)
    assert done.returncode == 0, done.stderr
    assert (
        box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False).returncode == 0
    )
    assert "DOCKWALL" not in saved_rules(host)
    done = dockwall(box, "apply", "--backend", "iptables", policy=policy)
    assert "removed the rules dockwall had installed with nftables" in done.stdout
    assert (
        box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False).returncode != 0
    )
    assert "DOCKWALL" in saved_rules(host)
    status = dockwall(box, "status", "--backend", "iptables", policy=policy)
    assert "backend iptables" in status.stdout and "match it: yes" in status.stdout
    policy.write_text(policy.read_text().replace("version: 1", "version: 1\nbackend: nftables"))
    assert run_dockwall(box, "apply", policy=policy).returncode == 0
    assert "DOCKWALL" not in saved_rules(host)
    check = run_dockwall(box, "check", "198.51.100.99", "admin-app", policy=policy)
    assert "dropped by the default" in check.stdout, check.stdout + check.stderr
    assert dockwall(box, "remove").stdout.strip() == "removed"
    assert (
        box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False).returncode != 0
    )


def test_auto_picks_the_backend_docker_uses(host: SeededSandbox, tmp_path: Path) -> None:
    """`auto` (no --backend, none in the policy) is nftables where Docker runs its nftables
    firewall backend (Docker 29's /info says so), iptables elsewhere; status says which
    firewall backend Docker itself uses."""
    box, policy = host.sandbox, tmp_path / "policy.yaml"
    nft_docker = host.engine == "29-nftables"
    done = run_dockwall(box, "apply", policy=policy)
    assert done.returncode == 0, done.stderr
    ours = box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False)
    assert (ours.returncode == 0) is nft_docker
    assert ("DOCKWALL" in saved_rules(host)) is not nft_docker
    status = run_dockwall(box, "status", policy=policy)
    assert f"backend {'nftables' if nft_docker else 'iptables'}," in status.stdout
    # Docker 20.10's /info has no FirewallBackend; 28 and 29 say which they use.
    expected = {"29-nftables": "nftables", "20.10": NOT_REPORTED}.get(host.engine, "iptables")
    assert f"Docker's firewall backend: {expected}" in status.stdout, status.stdout
    doc = json.loads(run_dockwall(box, "status", "--json", policy=policy).stdout)
    assert doc["docker_firewall_backend"] == expected
    assert run_dockwall(box, "remove").returncode == 0
    assert "DOCKWALL" not in saved_rules(host)


def test_without_docker_user_the_jump_sits_in_forward_and_says_so(
    host: SeededSandbox, tmp_path: Path
) -> None:
    """Where Docker made no DOCKER-USER (none in Docker's nftables mode; none in ip6tables
    on 20.10), apply says the jump goes to the top of FORWARD and why; status says
    where dockwall's iptables rules hook on Docker's nftables backend."""
    done = dockwall(host.sandbox, "apply", policy=tmp_path / "policy.yaml")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if ": " in line}
    no_user = {"29-nftables": ("ipv4", "ipv6"), "20.10": ("ipv6",)}.get(host.engine, ())
    for family in ("ipv4", "ipv6"):
        if family in no_user:
            assert "top of FORWARD (there is no DOCKER-USER to hook)" in lines[family], done.stdout
        else:
            assert "top of DOCKER-USER and FORWARD" in lines[family], done.stdout
    status = dockwall(host.sandbox, "status", policy=tmp_path / "policy.yaml")
    hooked_forward = "dockwall's iptables rules hook FORWARD" in status.stdout
    assert hooked_forward is (host.engine == "29-nftables"), status.stdout


ROUTED_V6 = IPv6Network("2001:db8:d0c:2::/64")  # inside the range the outside hosts route


@pytest.mark.parametrize(
    "backend", ["iptables", "nftables"], ids=["with-iptables", "with-nftables"]
)
def test_on_a_routed_network_our_drop_is_final_and_our_accept_is_not(
    host: SeededSandbox, tmp_path: Path, backend: str
) -> None:
    """An IPv6-only network in gateway mode routed (Docker 28 and later): no NAT and no raw
    drop, so Docker's own forward rules decide: they accept a published container port
    routed straight at the container and drop the others (Docker 29's nftables backend:
    "UNPUBLISHED PORT DROP"). dockwall's accept for an admin does not open the unpublished
    port; its default drop closes the published port to a stranger whom Docker lets in."""
    if host.engine == "20.10":
        pytest.skip("Docker 20.10 has no gateway modes and no IPv6-only networks")
    box = host.sandbox
    create_routed_network(box)
    try:
        box.docker(
            "run", "-d", "--name", "routed", "--network", "routednet", "-p", "8085:80",
            IMAGE, "/bin/serve", "80", "9000",
        )  # fmt: skip
        inspected = json.loads(box.docker("inspect", "routed").stdout)[0]
        address = addr(inspected["NetworkSettings"]["Networks"]["routednet"]["GlobalIPv6Address"])
        wan = [(WAN_ADMIN1_6, address, 80), (WAN_ADMIN1_6, address, 9000)]
        wan.append((WAN_STRANGER_6, address, 80))
        deadline = time.monotonic() + 15
        while box.probe(Side.WAN, wan) != [True, False, True]:  # Docker alone
            assert time.monotonic() < deadline, box.probe(Side.WAN, wan)
            time.sleep(0.2)
        done = dockwall(box, "apply", "--backend", backend, policy=tmp_path / "policy.yaml")
        assert done.returncode == 0, done.stderr
        assert box.probe(Side.WAN, wan) == [True, False, False], dump_all(box)
    finally:
        box.docker("rm", "-f", "routed", check=False)
        box.docker("network", "rm", "routednet", check=False)


def create_routed_network(box: Sandbox) -> None:
    """Through the Engine API: the docker CLI here is 20.10's, which has no --ipv4=false."""
    spec = {
        "Name": "routednet",
        "EnableIPv4": False,
        "EnableIPv6": True,
        "IPAM": {"Config": [{"Subnet": str(ROUTED_V6)}]},
        "Options": {"com.docker.network.bridge.gateway_mode_ipv6": "routed"},
    }
    header = "Content-Type: application/json"
    socket = str(box.dirs.socket)
    body = json.dumps(spec)
    box.run_in_host(
        [
            "curl",
            "-sSf",
            "--unix-socket",
            socket,
            "-H",
            header,
            "-d",
            body,
            "http://d/networks/create",
        ]
    )


def dump_all(box: Sandbox) -> str:
    return box.firewall_dump() + box.run_in_host(["nft", "list", "ruleset"]).stdout
