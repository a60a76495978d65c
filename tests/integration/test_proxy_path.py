"""docker-proxy's path through the host's INPUT hook, with real packets.

Docker's default daemon config (no IPv6 on its networks) on a host whose interfaces have
IPv6: Docker publishes every port on [::] too, and docker-proxy carries IPv6 clients to the
IPv4-only containers. Those packets never pass FORWARD. The same policy must decide them,
the host's own services must stay untouched, an operator's own INPUT rules must still drop,
and after `nft flush ruleset` (Docker's NAT gone: every published port is served by
docker-proxy) `dockwall run` must close the host again.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from dockwall_sandbox import Sandbox, SeededSandbox
from dockwall_sandbox import topology as topo
from dockwall_sandbox.dockwall_cli import RunningDaemon, dockwall
from dockwall_sandbox.image import IMAGE
from dockwall_sandbox.matrix import Case, cases, outside_sources, probe
from tests.integration.conftest import ENGINE_NAMES, _require
from tests.integration.firewall import eventually, mismatches
from tests.integration.test_firewall import example_policy_allows

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
HOST_SERVICE = 2222  # a host service Docker does not publish (as sshd would be)
BACKENDS = ("iptables", "nftables")


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def default_config(
    request: pytest.FixtureRequest, leftovers_removed: list[str]
) -> Iterator[SeededSandbox]:
    """The seed scenario on Docker's default daemon config, and a host service."""
    engine: str = request.param
    _require(engine)
    with Sandbox(engine, ipv6=False) as sandbox:
        scenario = sandbox.start_seed_scenario()
        sandbox.start_host_service(HOST_SERVICE)
        yield SeededSandbox(engine=engine, sandbox=sandbox, scenario=scenario)


@pytest.fixture(scope="module")
def baseline(default_config: SeededSandbox) -> dict[Case, bool]:
    """Plain Docker: every published port answers, IPv6 ones through docker-proxy."""
    dockwall(default_config.sandbox, "remove")
    observed = probe(default_config.sandbox, cases(default_config.scenario))
    published = [c for c in observed if c.path == "published"]
    assert any(c.source.version == 6 for c in published), "harness: no IPv6 published cases"
    assert all(observed[c] for c in published), "harness: Docker not publishing on both"
    return observed


@pytest.fixture(params=BACKENDS, ids=[f"with-{b}" for b in BACKENDS])
def host(
    default_config: SeededSandbox,
    baseline: dict[Case, bool],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[SeededSandbox, Path, str]]:
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    yield default_config, tmp_path / "policy.yaml", request.param
    dockwall(default_config.sandbox, "remove")


def apply(seeded: SeededSandbox, policy: Path, backend: str) -> None:
    done = dockwall(seeded.sandbox, "apply", "--backend", backend, policy=policy)
    assert done.returncode == 0, done.stderr + seeded.sandbox.firewall_dump()


def host_service_cases() -> list[tuple[IPv4Address | IPv6Address, IPv4Address | IPv6Address, int]]:
    found = []
    for link in topo.LINKS:
        for source in link.addresses():
            target = link.host4 if source.version == 4 else link.host6
            found.append((source, target, HOST_SERVICE))
    return found


def test_the_policy_decides_the_proxy_path_and_the_host_service_is_untouched(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool]
) -> None:
    seeded, policy, backend = host
    apply(seeded, policy, backend)
    observed = probe(seeded.sandbox, list(baseline))
    wrong = mismatches(observed, lambda c: baseline[c] and example_policy_allows(c))
    assert not wrong, "\n".join(wrong) + "\n" + seeded.sandbox.firewall_dump()
    service = seeded.sandbox.probe_auto(host_service_cases())
    assert all(service), f"the host service was touched: {service}"


def test_check_agrees_with_real_connections_on_the_proxy_path(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool]
) -> None:
    seeded, policy, backend = host
    apply(seeded, policy, backend)
    observed = probe(seeded.sandbox, [c for c in baseline if c.path == "published"])
    wrong, paths = check_disagreements(seeded, policy, backend, observed)
    assert not wrong, "\n".join(wrong)
    assert paths[6] == {"docker-proxy"}, "IPv6 to IPv4-only containers goes through docker-proxy"
    assert paths[4] == {"forward"}, "IPv4 is DNATed by Docker"


def check_disagreements(
    seeded: SeededSandbox, policy: Path, backend: str, observed: dict[Case, bool]
) -> tuple[list[str], dict[int, set[str]]]:
    """`dockwall check SOURCE HOST-ADDRESS --json` for every outside source, against the
    observed connections; also the paths check said, by family."""
    said: dict[tuple[str, int], tuple[bool, str]] = {}
    for source in outside_sources():
        link = topo.WAN_LINK if source in topo.WAN_LINK.addresses() else topo.LAN_LINK
        target = link.host4 if source.version == 4 else link.host6
        done = dockwall(
            seeded.sandbox, "check", str(source), str(target), "--json", "--backend", backend,
            policy=policy,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["installed_matches_policy"], doc
        for v in doc["verdicts"]:
            said[(str(source), v["dialed_port"])] = (v["verdict"] == "allowed", v["path"])
    wrong = [
        f"{case}: check says {said.get((str(case.source), case.port))}, connection {ok}"
        for case, ok in observed.items()
        if said.get((str(case.source), case.port), (None, ""))[0] != ok
    ]
    paths: dict[int, set[str]] = {4: set(), 6: set()}
    for (source, _), (_, path) in said.items():
        paths[ip_address(source).version].add(path)
    return wrong, paths


def test_status_says_which_path_each_family_takes(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool]
) -> None:
    seeded, policy, backend = host
    apply(seeded, policy, backend)
    done = dockwall(seeded.sandbox, "status", "--json", "--backend", backend, policy=policy)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["installed_matches_policy"] is True
    ports = {(c["name"], p["host_port"]): p for c in doc["containers"] for p in c["ports"]}
    assert set(ports) == {("www-nginx", 80), ("www-nginx", 443), ("admin-app", 8080), ("db", 5432)}
    for port in ports.values():
        assert port["paths"] == {"ipv4": "forward", "ipv6": "docker-proxy"}
    assert {r["name"] for r in ports[("db", 5432)]["rules"]} == {"admins", "lan"}
    assert ports[("www-nginx", 443)]["public"] is True
    text = dockwall(seeded.sandbox, "status", "--backend", backend, policy=policy).stdout
    assert "v4 nat, v6 proxy" in text


OPERATOR_TABLE = """table inet operator {
    chain input {
        type filter hook input priority filter; policy accept;
        ip6 saddr 2001:db8:100::10 drop
    }
}
"""


def test_an_operators_own_input_rules_still_drop(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool]
) -> None:
    """dockwall only narrows: an nftables input chain of the operator's (admin-1) and an
    ip6tables INPUT rule appended as ufw would (admin-2) still drop on the proxy path."""
    seeded, policy, backend = host
    sandbox = seeded.sandbox
    sandbox.run_in_host(["nft", "-f", "-"], input=OPERATOR_TABLE)
    ufw_like = ["ip6tables", "-w", "5", "-A", "INPUT", "-s", str(topo.WAN_ADMIN2_6), "-j", "DROP"]
    sandbox.run_in_host(ufw_like)
    try:
        apply(seeded, policy, backend)
        blocked = {topo.WAN_ADMIN1_6, topo.WAN_ADMIN2_6}
        published = [c for c in baseline if c.path == "published"]
        observed = probe(sandbox, published)
        wrong = mismatches(observed, lambda c: example_policy_allows(c) and c.source not in blocked)
        assert not wrong, "\n".join(wrong) + "\n" + sandbox.firewall_dump()
    finally:
        sandbox.run_in_host(["nft", "delete", "table", "inet", "operator"], check=False)
        sandbox.run_in_host([*ufw_like[:3], "-D", *ufw_like[4:]], check=False)


def test_remove_leaves_no_input_jump_or_input_chain(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool]
) -> None:
    seeded, policy, backend = host
    before = seeded.sandbox.firewall_dump()
    apply(seeded, policy, backend)
    assert dockwall(seeded.sandbox, "remove").returncode == 0
    after = seeded.sandbox.firewall_dump()
    assert "DOCKWALL" not in after and _without_dates(after) == _without_dates(before)
    nft = seeded.sandbox.run_in_host(["nft", "list", "ruleset"]).stdout
    assert "dockwall" not in nft
    observed = probe(seeded.sandbox, list(baseline))
    assert observed == baseline, "plain Docker again"


def _without_dates(dump: str) -> str:
    lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in dump.splitlines()]
    return "\n".join(line for line in lines if not line.startswith("#"))


def test_a_created_container_is_closed_on_the_proxy_path_before_it_starts(
    host: tuple[SeededSandbox, Path, str], baseline: dict[Case, bool], tmp_path: Path
) -> None:
    """`docker create` names the host port before docker-proxy listens on it: `dockwall run`
    governs the port from the create event, so a stranger dialing it over IPv6 while the
    container starts never gets in (probed throughout the start), and admins do."""
    seeded, policy, backend = host
    sandbox = seeded.sandbox
    daemon = RunningDaemon(sandbox, policy, tmp_path / "run.log", "--backend", backend)
    stranger = (topo.WAN_STRANGER_6, topo.WAN_LINK.host6, 9094)
    admin = (topo.WAN_ADMIN1_6, topo.WAN_LINK.host6, 9094)
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        sandbox.docker("create", "--name", "late", "-p", "9094:80", IMAGE, "/bin/serve", "80")
        assert eventually(lambda: "9094" in _installed(sandbox)), daemon.log()
        leaked: list[bool] = []
        prober = threading.Thread(
            target=lambda: leaked.extend(
                ok for _ in range(15) for ok in sandbox.probe_auto([stranger], timeout=0.3)
            )
        )
        prober.start()
        sandbox.docker("start", "late")
        assert eventually(lambda: sandbox.probe_auto([admin], timeout=0.5)[0]), daemon.log()
        prober.join(60)
        assert leaked and not any(leaked), (leaked, daemon.log())
        assert not sandbox.probe_auto([stranger], timeout=0.5)[0]
    finally:
        daemon.stop()
        sandbox.docker("rm", "-f", "late", check=False)


DOCKERD_OWN = 2223  # a port a process in dockerd's cgroup listens on (not docker-proxy)


def test_an_unseen_containers_port_is_closed_from_the_first_packet_with_nftables(
    default_config: SeededSandbox, baseline: dict[Case, bool], tmp_path: Path
) -> None:
    """nftables matches the cgroup of the socket a packet is for: docker-proxy lives in
    dockerd's cgroup, so a port it serves for a container dockwall has not seen (here never:
    a one-shot apply, then `docker run`) is judged as a container no rule selects. The
    stranger never gets in, an admin (a rule for every container) does; a port another
    process in dockerd's cgroup listens on and the host's own service stay untouched; and
    without dockwall the stranger reaches that port (the test is not vacuous)."""
    sandbox = default_config.sandbox
    sandbox.start_host_service(DOCKERD_OWN, in_dockerd_cgroup=True)
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    apply(default_config, tmp_path / "policy.yaml", "nftables")
    port = 9095
    stranger = (topo.WAN_STRANGER_6, topo.WAN_LINK.host6, port)
    admin = (topo.WAN_ADMIN1_6, topo.WAN_LINK.host6, port)
    untouched = [
        (source, topo.WAN_LINK.host6, p)
        for source in (topo.WAN_STRANGER_6, topo.WAN_ADMIN1_6)
        for p in (DOCKERD_OWN, HOST_SERVICE)
    ]
    try:
        chain = sandbox.run_in_host(["nft", "list", "chain", "inet", "dockwall", "input"]).stdout
        assert "socket cgroupv2 level 1" in chain and f"dport {DOCKERD_OWN}" in chain, chain
        said = dockwall(sandbox, "status", "--backend", "nftables", policy=tmp_path / "policy.yaml")
        assert "not seen yet: closed from the first packet" in said.stdout, said.stdout
        said = dockwall(sandbox, "status", "--backend", "iptables", policy=tmp_path / "policy.yaml")
        assert "not seen yet: open until dockwall has seen" in said.stdout, said.stdout
        leaked: list[bool] = []
        prober = threading.Thread(
            target=lambda: leaked.extend(
                ok for _ in range(15) for ok in sandbox.probe_auto([stranger], timeout=0.3)
            )
        )
        prober.start()
        sandbox.docker(
            "run", "-d", "--name", "unseen", "-p", f"{port}:80", IMAGE, "/bin/serve", "80"
        )
        assert eventually(lambda: sandbox.probe_auto([admin], timeout=0.5)[0]), chain
        prober.join(60)
        assert leaked and not any(leaked), leaked
        assert not sandbox.probe_auto([stranger], timeout=0.5)[0], _installed(sandbox)
        assert all(sandbox.probe_auto(untouched)), _installed(sandbox)
        dockwall(sandbox, "remove")
        assert eventually(lambda: sandbox.probe_auto([stranger], timeout=0.5)[0])
    finally:
        dockwall(sandbox, "remove")
        sandbox.docker("rm", "-f", "unseen", check=False)


def _installed(sandbox: Sandbox) -> str:
    nft = sandbox.run_in_host(["nft", "list", "ruleset"], check=False).stdout
    return sandbox.firewall_dump() + nft


FLUSHES = {
    "nft flush ruleset": ["nft", "flush", "ruleset"],
    "iptables -F INPUT": ["iptables", "-w", "5", "-F", "INPUT"],
    "ip6tables -F INPUT": ["ip6tables", "-w", "5", "-F", "INPUT"],
}


@pytest.mark.parametrize("flush", list(FLUSHES))
def test_flushes_fail_closed_under_dockwall_run(
    host: tuple[SeededSandbox, Path, str],
    baseline: dict[Case, bool],
    tmp_path: Path,
    flush: str,
) -> None:
    """After the flush and dockwall's repair: strangers blocked on every published port, on
    both families, allowed sources connect, the host service untouched.

    After `nft flush ruleset` Docker's NAT and filter rules are gone until Docker restarts
    (this test leaves them gone; it is the module's last): every published port is then
    docker-proxy's, and direct routing to containers is no longer dropped by Docker, only by
    dockwall. So what plain Docker lets through is measured anew at the start."""
    seeded, policy, backend = host
    sandbox = seeded.sandbox
    everything = list(baseline)
    plain = probe(sandbox, everything)
    daemon = RunningDaemon(sandbox, policy, tmp_path / "run.log", "--backend", backend)
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        mark = len(daemon.log())
        sandbox.run_in_host(FLUSHES[flush])
        nat_gone = flush == "nft flush ruleset"

        def expected(case: Case) -> bool:
            return (plain[case] or nat_gone) and example_policy_allows(case)

        def right() -> bool:
            return not mismatches(probe(sandbox, everything), expected)

        assert eventually(right, timeout=10.0), (
            "\n".join(mismatches(probe(sandbox, everything), expected))
            + "\n"
            + daemon.log()[mark:]
            + sandbox.firewall_dump()
        )
        service = sandbox.probe_auto(host_service_cases())
        assert all(service), f"the host service was touched: {service}"
        if nat_gone:  # check says docker-proxy takes every published port, and agrees
            published = [c for c in everything if c.path == "published"]
            observed = probe(sandbox, published)
            wrong, paths = check_disagreements(seeded, policy, backend, observed)
            assert not wrong, "\n".join(wrong)
            assert paths == {4: {"docker-proxy"}, 6: {"docker-proxy"}}, paths
    finally:
        daemon.stop()


STALE_PORT = 40123  # the stranger's source port that conntrack already knows
CONNECT = r"""
import socket, sys
src, dst, port, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(1.0)
    try:
        s.bind((src, sport))
        s.connect((dst, port))
        s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
        print("answered" if s.recv(100).startswith(b"HTTP/") else "connected")
    except TimeoutError:
        print("timed out")
    except OSError as exc:
        print(f"reached: {exc}")  # a reset: the packet got to a TCP stack
"""


def connect_from(seeded: SeededSandbox, source: IPv4Address | IPv6Address, port: int) -> str:
    """One connection from the LAN to the host's address on `port`, from STALE_PORT."""
    target = topo.LAN_LINK.host4 if source.version == 4 else topo.LAN_LINK.host6
    argv = [sys.executable, "-c", CONNECT, str(source), str(target), str(port), str(STALE_PORT)]
    return seeded.sandbox.run_in_outside("lan", argv, check=False).stdout.strip()


def test_a_conntrack_entry_for_a_strangers_connection_lets_nothing_in(
    host: tuple[SeededSandbox, Path, str],
) -> None:
    """conntrack passes a SYN on an entry it holds as established as established: an entry
    for a stranger's connection (left from a flush window, or written with `conntrack -I`)
    must let nothing of theirs in, on the forward path (IPv4, DNATed to db) or the proxy
    path (IPv6, docker-proxy). Replies and the allowed still pass."""
    seeded, policy, backend = host
    apply(seeded, policy, backend)
    db = seeded.scenario["db"]
    assert db.ipv4 is not None
    assert connect_from(seeded, topo.LAN_HOST1_4, 5432) == "answered"  # the harness works
    assert connect_from(seeded, topo.LAN_HOST1_6, 5432) == "answered"
    entries = (
        (topo.LAN_STRANGER_4, topo.LAN_LINK.host4, db.ipv4),  # DNAT: replies come from db
        (topo.LAN_STRANGER_6, topo.LAN_LINK.host6, topo.LAN_LINK.host6),  # docker-proxy
    )
    for stranger, target, replier in entries:
        seeded.sandbox.run_in_host(
            ["conntrack", "-I", "-p", "tcp", "-s", str(stranger), "-d", str(target),
             "--sport", str(STALE_PORT), "--dport", "5432", "-r", str(replier),
             "-q", str(stranger), "--reply-port-src", "5432",
             "--reply-port-dst", str(STALE_PORT), "--state", "ESTABLISHED", "-t", "120",
             "-u", "SEEN_REPLY,ASSURED"]
        )  # fmt: skip
    try:
        for stranger, _, _ in entries:
            said = connect_from(seeded, stranger, 5432)
            assert said == "timed out", f"{stranger} with a conntrack entry: {said}"
    finally:
        for stranger, _, _ in entries:
            seeded.sandbox.run_in_host(["conntrack", "-D", "-s", str(stranger)], check=False)
