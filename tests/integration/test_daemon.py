"""`dockwall run` with real packets: it follows containers, repairs flushed rules, reloads on
SIGHUP, and leaves its rules in place when stopped or killed."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from dockwall_sandbox import SeededSandbox
from dockwall_sandbox import topology as topo
from dockwall_sandbox.dockwall_cli import RunningDaemon, dockwall
from tests.metrics_text import samples

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
STRANGER = IPv4Address("198.51.100.99")
ADMIN = IPv4Address("198.51.100.10")
WAN_HOST = IPv4Address("198.51.100.1")


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> float | None:
    """Seconds until check() held, or None if it never did within timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def reaches(seeded: SeededSandbox, source: IPv4Address, port: int) -> bool:
    return seeded.sandbox.probe_auto([(source, WAN_HOST, port)], timeout=0.5)[0]


def dockwall_rules(seeded: SeededSandbox) -> list[str]:
    """What dockwall has in the kernel, either backend, without counters."""
    iptables = [
        line
        for line in seeded.sandbox.firewall_dump().splitlines()
        if "DOCKWALL" in line and not line.startswith("#")
    ]
    nft = seeded.sandbox.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False)
    table = re.sub(r"counter packets \d+ bytes \d+", "counter", nft.stdout).splitlines()
    return iptables + table


def uses_nftables(seeded: SeededSandbox) -> bool:
    """dockwall's rules are its nftables table (what `auto` picks on Docker's nftables
    firewall backend), not iptables chains."""
    nft = seeded.sandbox.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False)
    return nft.returncode == 0


def flush_own_chain(seeded: SeededSandbox) -> None:
    """Empty dockwall's main chain by hand, as another tool's reload would."""
    if uses_nftables(seeded):
        seeded.sandbox.run_in_host(["nft", "flush", "chain", "inet", "dockwall", "governed"])
        return
    for tool in ("iptables", "ip6tables"):
        seeded.sandbox.run_in_host([tool, "-F", "DOCKWALL-IN"])


def assert_hooked_first(seeded: SeededSandbox) -> None:
    """dockwall's hook is where it decides first: its jump on top of DOCKER-USER (or of
    FORWARD, where the family has no DOCKER-USER), or its nftables base chain at priority
    -10, before Docker's (which Docker's nftables backend re-creates on each start)."""
    box = seeded.sandbox
    if uses_nftables(seeded):
        table = box.run_in_host(["nft", "list", "table", "inet", "dockwall"]).stdout
        assert "type filter hook forward priority filter - 10; policy accept;" in table, table
        assert "goto governed" in table, table
        return
    for tool in ("iptables", "ip6tables"):
        user = box.run_in_host([tool, "-S", "DOCKER-USER"], check=False)
        hook = user if user.returncode == 0 else box.run_in_host([tool, "-S", "FORWARD"])
        rules = [ln for ln in hook.stdout.splitlines() if ln.startswith("-A")]
        assert rules and rules[0].endswith("-j DOCKWALL"), (tool, rules)


LATE_PUBLIC = """  - name: late-public
    from: any
    via: eth0
    to: {label: "public=yes"}
    ports: [8081, 8082]
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    """The example policy and a rule for containers labelled public=yes, on port 8081."""
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE.read_text() + LATE_PUBLIC)
    return path


# Ids "with-...": "[29-nftables]" must name the engine, not Docker 29 with dockwall's nftables.
BACKEND_IDS = ["with-iptables", "with-nftables"]


@pytest.fixture(params=["iptables", "nftables"], ids=BACKEND_IDS)
def running(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[SeededSandbox, RunningDaemon]]:
    """`dockwall run` with each backend."""
    dockwall(seeded_sandbox.sandbox, "remove")
    daemon = RunningDaemon(
        seeded_sandbox.sandbox, policy, tmp_path / "dockwall.log", "--backend", request.param
    )
    assert daemon.wait_for("msg=running"), daemon.log()
    yield seeded_sandbox, daemon
    daemon.stop()
    dockwall(seeded_sandbox.sandbox, "remove")
    for name in ("filler", "late-web", "late-two", "late-three"):
        seeded_sandbox.sandbox.docker("rm", "-f", name, check=False)


def test_started_container_is_followed_and_closed_by_default(
    running: tuple[SeededSandbox, RunningDaemon],
) -> None:
    seeded, daemon = running
    # Not selected by any rule: closed to the stranger, open to an admin (a "*" rule).
    seeded.sandbox.start_container("late-web", [(8081, 80)], labels={"public": "no"})
    assert eventually(lambda: reaches(seeded, ADMIN, 8081)) is not None, daemon.log()
    assert not reaches(seeded, STRANGER, 8081)
    # Selected by the late-public rule: open to the stranger once the daemon saw it start.
    seeded.sandbox.docker("rm", "-f", "late-web")
    seeded.sandbox.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
    assert eventually(lambda: reaches(seeded, STRANGER, 8081)) is not None, daemon.log()
    assert daemon.wait_for("container late-web started")
    assert daemon.wait_for("rule late-public updated")


def test_address_reuse_does_not_open_the_new_owner(
    running: tuple[SeededSandbox, RunningDaemon],
) -> None:
    """www-nginx (public on 80) stops; a container the policy doesn't name takes its address
    and publishes 80 on another host port's container port 80: the stranger must not reach it
    once the daemon has seen the events, and www-nginx is public again at its new address."""
    seeded, daemon = running
    box = seeded.sandbox
    old = box.inspect("www-nginx")
    box.docker("stop", "-t", "0", "www-nginx")
    filler = box.start_container("filler", [(8082, 80), (8443, 443)])
    box.docker("start", "www-nginx")
    new = box.inspect("www-nginx")
    assert daemon.wait_for("container www-nginx")
    assert eventually(lambda: reaches(seeded, STRANGER, 80)) is not None, daemon.log()
    if filler.ipv4 == old.ipv4:  # the address really moved (Docker's IPAM may not reuse it)
        assert new.ipv4 != old.ipv4
    # The filler's ports dialed as 8082/8443 are not in the public-web rule.
    assert not reaches(seeded, STRANGER, 8082)
    assert not reaches(seeded, STRANGER, 8443)


def test_a_container_joining_a_class_and_a_reused_address(
    running: tuple[SeededSandbox, RunningDaemon],
) -> None:
    """A second container the same rules select joins their class (with iptables: one ipset
    member, no rule changes); once it is gone, a container that gets its address but that
    no rule selects is closed."""
    seeded, daemon = running
    box = seeded.sandbox
    box.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
    assert eventually(lambda: reaches(seeded, STRANGER, 8081)) is not None, daemon.log()
    rules = dockwall_rules(seeded)
    address = topo.DBNET_V4[50]
    box.start_container("late-two", [(8082, 80)], "dbnet", {"public": "yes"}, ip=address)
    assert eventually(lambda: reaches(seeded, STRANGER, 8082)) is not None, daemon.log()
    if "iptables" in daemon.extra:
        # The forward path: no rule changes. The proxy path gains the new host port 8082
        # (the lines that name it), and nothing else.
        now = dockwall_rules(seeded)
        proxy = ("-A DOCKWALL-INPUT ", "-A DOCKWALL-PROXY ")
        assert [r for r in now if not r.startswith(proxy)] == [
            r for r in rules if not r.startswith(proxy)
        ]
        gained = [r for r in now if r not in rules]
        assert gained and all("--dport 8082" in r for r in gained), gained
        assert [r for r in rules if r not in now] == []
        members = box.run_in_host(["ipset", "list"]).stdout
        assert f"{address}" in members, members
    box.docker("rm", "-f", "late-two")
    box.start_container("late-three", [(8082, 80)], "dbnet", {"public": "no"}, ip=address)
    assert eventually(lambda: reaches(seeded, ADMIN, 8082)) is not None, daemon.log()
    assert not reaches(seeded, STRANGER, 8082)
    # dockwall's own writes did not wake its watch of kernel changes (Docker's iptables
    # writes did; Docker 29's nftables backend writes its own tables, with nft too, which
    # change nothing of dockwall's and wake nothing).
    woken = [line for line in daemon.log().splitlines() if "changed by someone else" in line]
    ours = ("(iptables-restor)", "(ip6tables-resto)", "(nft)", "(python")
    assert not [line for line in woken if any(name in line for name in ours)], woken


def test_flushed_chains_are_repaired_within_a_second_or_so(
    running: tuple[SeededSandbox, RunningDaemon],
) -> None:
    seeded, daemon = running
    before = dockwall_rules(seeded)
    assert before
    if "nftables" in daemon.extra:
        seeded.sandbox.run_in_host(["nft", "flush", "chain", "inet", "dockwall", "governed"])
        seeded.sandbox.run_in_host(["nft", "flush", "set", "inet", "dockwall", "src4-admins"])
    for tool in ("iptables", "ip6tables") if "iptables" in daemon.extra else ():
        # DOCKER-USER holds the jump; where the family has none (ip6tables on 20.10), FORWARD.
        flushed = seeded.sandbox.run_in_host([tool, "-F", "DOCKER-USER"], check=False)
        if flushed.returncode != 0:
            seeded.sandbox.run_in_host([tool, "-D", "FORWARD", "-j", "DOCKWALL"])
        seeded.sandbox.run_in_host([tool, "-F", "DOCKWALL-IN"])
    # (No look at the flushed state: the repair may already be done by now.)
    took = eventually(lambda: dockwall_rules(seeded) == before, timeout=5)
    assert took is not None and took < 2.0, (took, daemon.log())
    assert daemon.wait_for("drift")
    assert not reaches(seeded, STRANGER, 8080)


METRICS = "127.0.0.1:9707"
STRANGER6 = IPv6Address("2001:db8:100::99")
WAN_HOST6 = IPv6Address("2001:db8:100::1")


def scrape(seeded: SeededSandbox) -> dict[str, float]:
    """`dockwall run`'s metrics, fetched over HTTP in the host namespace: every sample by
    name and labels (`name{k=v,...}`)."""
    argv = ["curl", "-sSf", "--max-time", "5", f"http://{METRICS}/metrics"]
    return samples(seeded.sandbox.run_in_host(argv, timeout=10).stdout)


def allowed(got: dict[str, float], family: str) -> float:
    return got.get(f"dockwall_rule_allowed_packets_total{{family={family},rule=public-web}}", 0)


def repairs(got: dict[str, float]) -> float:
    return sum(v for k, v in got.items() if k.startswith("dockwall_drift_repairs_total{"))


@pytest.mark.parametrize("backend", ["iptables", "nftables"], ids=BACKEND_IDS)
def test_metrics_move_with_real_traffic_and_events(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path, backend: str
) -> None:
    """Scraped from a real `dockwall run --metrics-address`: the kernel's counters per rule
    and family move with real connections (allowed and dropped), an event's latency is
    counted once its rules are in, a flushed chain counts as a drift repair."""
    seeded, box = seeded_sandbox, seeded_sandbox.sandbox
    dockwall(box, "remove")
    extra = ("--backend", backend, "--metrics-address", METRICS)
    daemon = RunningDaemon(box, policy, tmp_path / "dockwall.log", *extra)
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        assert "serving metrics" in daemon.log()
        first = scrape(seeded)
        assert first["dockwall_applies_total{result=ok}"] >= 1
        assert first["dockwall_docker_connected{}"] == 1
        assert first["dockwall_last_apply_timestamp_seconds{}"] > time.time() - 60
        assert any(k.startswith(f"dockwall_build_info{{backend={backend},") for k in first)

        n = 4
        cases = [(STRANGER, WAN_HOST, 80)] * n + [(STRANGER6, WAN_HOST6, 80)] * n
        cases += [(STRANGER, WAN_HOST, 8080)] * n + [(STRANGER6, WAN_HOST6, 8080)] * n
        assert box.probe_auto(cases, timeout=0.5) == [True] * 2 * n + [False] * 2 * n
        after = scrape(seeded)
        for family in ("ipv4", "ipv6"):  # each connection's first packet, at least
            assert allowed(after, family) - allowed(first, family) >= n, (family, after)
        dropped = "dockwall_default_dropped_packets_total{}"
        assert after[dropped] - first[dropped] >= 2 * n, after

        events = "dockwall_event_to_kernel_seconds_count{}"
        box.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
        assert eventually(lambda: reaches(seeded, STRANGER, 8081)) is not None, daemon.log()
        assert eventually(lambda: scrape(seeded)[events] > after[events]) is not None

        flush_own_chain(seeded)
        assert eventually(lambda: repairs(scrape(seeded)) > repairs(after)) is not None, (
            daemon.log()
        )
        assert not reaches(seeded, STRANGER, 8080)
    finally:
        daemon.stop()
        dockwall(box, "remove")
        box.docker("rm", "-f", "late-web", check=False)


def test_invalid_policy_on_sighup_keeps_the_running_rules(
    running: tuple[SeededSandbox, RunningDaemon], policy: Path
) -> None:
    seeded, daemon = running
    before = dockwall_rules(seeded)
    policy.write_text("version: 1\nrules:\n  - {name: x, from: nope}\n")
    daemon.send(signal.SIGHUP)
    assert daemon.wait_for("new policy is invalid"), daemon.log()
    assert "unknown group 'nope'" in daemon.log()
    time.sleep(1.5)  # a drift check later, still the same
    assert dockwall_rules(seeded) == before
    assert daemon.proc.poll() is None


def test_sigterm_and_kill_leave_the_rules_and_restart_reconciles(
    running: tuple[SeededSandbox, RunningDaemon], policy: Path, tmp_path: Path
) -> None:
    seeded, daemon = running
    before = dockwall_rules(seeded)
    assert daemon.stop(signal.SIGTERM) == 0
    assert dockwall_rules(seeded) == before
    assert not reaches(seeded, STRANGER, 8080)
    again = RunningDaemon(seeded.sandbox, policy, tmp_path / "again.log", *daemon.extra)
    try:
        assert again.wait_for("msg=running"), again.log()
        again.stop(signal.SIGKILL)
        assert dockwall_rules(seeded) == before
        # While dockwall is dead a selected container starts: closed until dockwall is back.
        seeded.sandbox.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
        assert reaches(seeded, ADMIN, 8081)
        assert not reaches(seeded, STRANGER, 8081)
        third = RunningDaemon(seeded.sandbox, policy, tmp_path / "third.log", *daemon.extra)
        try:
            assert third.wait_for("msg=running"), third.log()
            assert eventually(lambda: reaches(seeded, STRANGER, 8081)) is not None, third.log()
        finally:
            third.stop()
    finally:
        again.stop()


def test_docker_unreachable_at_start_closes_and_keeps_running(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path
) -> None:
    """No Docker to ask and nothing installed: the policy goes in for a host with no
    containers (only `to: *` rules let anything through), and dockwall keeps trying."""
    box = seeded_sandbox.sandbox
    dockwall(box, "remove")
    daemon = RunningDaemon(
        box, policy, tmp_path / "nodocker.log", "--docker-host", f"unix://{tmp_path}/no-docker.sock"
    )
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        assert eventually(lambda: not reaches(seeded_sandbox, STRANGER, 80)) is not None, (
            daemon.log()
        )
        assert reaches(seeded_sandbox, ADMIN, 8080)
        time.sleep(3)
        assert daemon.proc.poll() is None
        assert daemon.log().count("Docker unreachable, retrying") == 1, daemon.log()
    finally:
        daemon.stop()
        dockwall(box, "remove")


def test_tells_systemd_ready_and_pings_the_watchdog(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path
) -> None:
    """The sd_notify protocol for real: READY=1 once the first apply is in, WATCHDOG=1
    while running, STOPPING=1 on SIGTERM, on a datagram socket like systemd's."""
    box = seeded_sandbox.sandbox
    dockwall(box, "remove")
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(10)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
        daemon = RunningDaemon(box, policy, tmp_path / "notify.log", env=env)
        try:
            said = [listener.recv(256).decode() for _ in range(3)]
            assert said[0] == "READY=1", said
            assert "WATCHDOG=1" in said[1:], said
            assert dockwall_rules(seeded_sandbox), "READY before the rules were in"
        finally:
            daemon.stop()
            dockwall(box, "remove")
        rest = []
        listener.settimeout(1)
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(listener.recv(256).decode())
        assert "STOPPING=1" in rest


def test_nftables_change_stream_repairs_at_once(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path
) -> None:
    """With the timed check 30 s away, a flush is still repaired in a blink: iptables-nft
    writes through nftables, whose change stream wakes dockwall (with `auto`'s backend:
    nftables on Docker's nftables firewall backend, where the flush is of its table)."""
    box = seeded_sandbox.sandbox
    dockwall(box, "remove")
    daemon = RunningDaemon(box, policy, tmp_path / "watch.log", "--check-interval", "30")
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        time.sleep(0.5)
        before = dockwall_rules(seeded_sandbox)
        start = time.monotonic()
        flush_own_chain(seeded_sandbox)
        took = eventually(lambda: dockwall_rules(seeded_sandbox) == before, timeout=10)
        assert took is not None, daemon.log()
        assert time.monotonic() - start < 1.0, daemon.log()
        assert daemon.wait_for("drift")
    finally:
        daemon.stop()
        dockwall(box, "remove")


# Keep last in this file: it restarts the engine under the module's shared sandbox.
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_docker_restart_or_crash_is_followed(
    seeded_sandbox: SeededSandbox, policy: Path, tmp_path: Path, crash: bool
) -> None:
    """Docker goes away and comes back (its event stream ends, it re-inserts its own jumps,
    or with its nftables backend re-creates its tables, containers come back with a restart
    policy): dockwall reconnects, puts its jump back at the top (its nftables table stays
    as it was) and follows the new addresses; the unselected container stays closed."""
    box = seeded_sandbox.sandbox
    dockwall(box, "remove")
    box.start_container("phoenix", [(8081, 80)], labels={"public": "yes"}, restart="always")
    box.start_container("ash", [(8082, 80)], restart="always")
    daemon = RunningDaemon(box, policy, tmp_path / "restart.log")
    try:
        assert daemon.wait_for("msg=running"), daemon.log()
        assert eventually(lambda: reaches(seeded_sandbox, STRANGER, 8081)) is not None
        mark = len(daemon.log())
        box.restart_engine(crash=crash)
        box.wait_running(["phoenix", "ash"])
        assert daemon.wait_for("following Docker's events", after=mark), daemon.log()
        assert eventually(lambda: reaches(seeded_sandbox, STRANGER, 8081)) is not None, (
            daemon.log() + box.firewall_dump()
        )
        # Docker's own rules for a restarted container may come a moment after it listens.
        assert eventually(lambda: reaches(seeded_sandbox, ADMIN, 8082)) is not None, (
            daemon.log()[mark:] + box.firewall_dump()
        )
        assert not reaches(seeded_sandbox, STRANGER, 8082)
        assert_hooked_first(seeded_sandbox)
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
        dockwall(box, "remove")
        box.docker("rm", "-f", "phoenix", "ash", check=False)
        box.docker("start", "www-nginx", "admin-app", "db", check=False)
