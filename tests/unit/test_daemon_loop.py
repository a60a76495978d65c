"""The daemon's loop against a fake backend: its decisions (pure), and how it behaves when
writes are refused, slow, or the kernel drifts under sustained Docker events. What packets
the rules let through is proven with real kernels in tests/integration/test_daemon.py."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from dockwall import record
from dockwall.backends.base import Change, FamilyChange, Kernel, Transaction
from dockwall.cli import app
from dockwall.cli import commands as cli
from dockwall.daemon import kernelwatch, loop, rule_changes
from dockwall.daemon.loop import Action, Daemon, Settings, next_action
from dockwall.daemon.triggers import Kind, Trigger, Triggers
from dockwall.errors import BackendError, DockerError
from dockwall.model.hoststate import Container, Endpoint, HostState, Network
from dockwall.model.policy import parse_policy
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Family, Verdict

POLICY = b"""version: 1
default: drop
groups:
  admins: [198.51.100.10]
rules:
  - name: admins
    from: admins
  - name: web
    from: any
    to: {container: web}
"""
NET = Network("n1", "bridge", "bridge", "docker0")


def event(what: str = "container web start") -> Trigger:
    return Trigger(Kind.EVENT, what, time.time())


@pytest.mark.parametrize(
    ("kinds", "due", "expected"),
    [
        ([Kind.EVENT], False, Action(reconcile=True)),
        ([Kind.EVENT], True, Action(reconcile=True, read_kernel=True, check_due=True)),
        ([Kind.EVENT, Kind.KERNEL_CHANGED], False, Action(reconcile=True, read_kernel=True)),
        ([Kind.KERNEL_CHANGED], False, Action(read_kernel=True)),
        ([Kind.FIREWALL_RELOADED], False, Action(read_kernel=True)),
        ([], True, Action(read_kernel=True, check_due=True)),
        ([], False, Action()),
        ([Kind.RELOAD], False, Action(reload=True, reconcile=True, read_kernel=True)),
        ([Kind.DOCKER_DOWN], False, Action(reconcile=True, read_kernel=True)),
        ([Kind.EVENT, Kind.STOP], True, Action(stop=True)),
    ],
)
def test_next_action(kinds: list[Kind], due: bool, expected: Action) -> None:
    batch = [Trigger(k, "x") for k in kinds]
    assert next_action(batch, now=10.0, next_check=10.0 if due else 11.0) == expected


def test_the_timed_check_cannot_starve_under_a_stream_of_events() -> None:
    now, next_check, reads = 0.0, 1.0, 0
    for _ in range(100):  # an event every 50 ms for 5 s
        action = next_action([event()], now, next_check)
        assert action.reconcile
        if action.read_kernel:
            reads += 1
        if action.check_due:
            next_check = now + 1.0
        now += 0.05
    assert reads == 4  # at 1, 2, 3 and 4 s


@dataclass(frozen=True)
class Script:
    """FakeBackend's writes: what it would do, "" if nothing."""

    text: str

    @property
    def pending(self) -> bool:
        return bool(self.text)


@dataclass
class FakeBackend:
    """A kernel that holds a set of rule names. Injectable: refuse (apply raises), slow
    (apply sleeps), and drift (someone deletes everything, see wipe)."""

    name: str = "fake"
    deltas: bool = True
    writes_streamed: bool = False
    held: frozenset[str] = frozenset()
    refuse: bool = False
    slow: float = 0.0
    reads: int = 0
    writes: list[frozenset[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def render(self, ruleset: Ruleset, previous: frozenset[str] | None = None) -> frozenset[str]:
        return frozenset(
            f"{a.rule}:{','.join(sorted(str(d) for d in a.destinations or ()))}"
            for a in ruleset.allows
        )

    def read(self) -> frozenset[str]:
        with self.lock:
            self.reads += 1
            return self.held

    def diff(
        self, desired: frozenset[str], installed: frozenset[str]
    ) -> Transaction[frozenset[str], Script]:
        pending = desired != installed
        families = (FamilyChange(Family.V4, pending, tuple(sorted(desired - installed))),)
        writes = Script("write" if pending else "")
        return Transaction(Change(families, writes, delta=self.deltas), installed, desired)

    def removal(self, installed: frozenset[str]) -> Transaction[frozenset[str], Script]:
        families = (FamilyChange(Family.V4, bool(installed)),)
        writes = Script("remove" if installed else "")
        return Transaction(Change(families, writes), installed, frozenset())

    def apply(self, tx: Transaction[frozenset[str], Script]) -> None:
        time.sleep(self.slow)
        if self.refuse:
            raise BackendError("refused; nothing was changed")
        assert tx.after is not None
        with self.lock:
            self.held = tx.after
            self.writes.append(tx.after)

    def wipe(self) -> None:
        with self.lock:
            self.held = frozenset()

    def hits(self) -> dict[str, object]:
        return {}

    def decide(self, ruleset: Ruleset, packets: list[object]) -> tuple[list[object], bool]:
        return [], True


def host(address: str = "192.0.2.2") -> HostState:
    web = Container("a" * 64, "web", {}, (Endpoint("bridge", ipaddress.ip_address(address), None),))
    return HostState((web,), (NET,), frozenset({"eth0"}), "test")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Daemon, FakeBackend]:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_bytes(POLICY)
    fake = FakeBackend()
    settings = Settings(policy_path, None, check_interval=0.2, watch_kernel=False)
    made = Daemon(settings, Kernel(fake), parse_policy(POLICY, str(policy_path)))  # type: ignore[arg-type]
    monkeypatch.setattr(made, "_snapshot", lambda fresh: host())
    monkeypatch.setattr(record, "save", lambda *args: None)
    return made, fake


def test_a_refused_write_keeps_the_old_rules_and_the_next_plan_reads_the_kernel(
    daemon: tuple[Daemon, FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    made, fake = daemon
    made.reconcile([event()], read_kernel=True)
    installed = fake.held
    assert installed and made.kernel.trusted == installed
    fake.refuse = True
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.reconcile([event()], read_kernel=False)
    assert fake.held == installed  # nothing changed
    assert "could not apply; the previous rules stay" in caplog.text
    assert made.kernel.trusted is None  # so the next plan reads the kernel
    fake.refuse = False
    reads = fake.reads
    made.reconcile([event()], read_kernel=False)
    assert fake.reads == reads + 1 and "web:192.0.2.9/32" in fake.held


def test_drift_is_repaired_by_the_timed_check_while_events_keep_coming(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    made, fake = daemon
    made.reconcile([event()], read_kernel=True)
    wanted = fake.held

    def slow_snapshot(fresh: bool) -> HostState:
        time.sleep(0.03)
        return host()

    made._snapshot = slow_snapshot  # type: ignore[method-assign]
    stop = threading.Event()

    def events() -> None:  # an event every 10 ms, a snapshot takes 30: never a quiet batch
        while not stop.is_set():
            made.triggers.put(event())
            time.sleep(0.01)

    feeder = threading.Thread(target=events)
    runner = threading.Thread(target=made._loop)
    feeder.start()
    runner.start()
    try:
        time.sleep(0.3)
        fake.wipe()  # someone flushes the rules; no one says so (iptables-legacy)
        deadline = time.monotonic() + 2.0
        while fake.held != wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.held == wanted  # repaired within the check interval, events or not
    finally:
        stop.set()
        feeder.join()
        made.triggers.put(Trigger(Kind.STOP, "test"))
        runner.join(5)
    assert not runner.is_alive()


def test_events_during_a_slow_write_are_handled_in_one_batch(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    made, fake = daemon
    made.reconcile([event()], read_kernel=True)
    calls: list[int] = []
    real = made.reconcile

    def counted(batch: list[Trigger], read_kernel: bool = True) -> None:
        calls.append(len(batch))
        real(batch, read_kernel)

    made.reconcile = counted  # type: ignore[method-assign]
    fake.slow = 0.3
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.triggers.put(event())
    runner = threading.Thread(target=made._loop)
    runner.start()
    time.sleep(0.1)  # the first write is under way
    for n in range(5):
        made.triggers.put(event(f"container web{n} start"))
    time.sleep(0.6)
    made.triggers.put(Trigger(Kind.STOP, "test"))
    runner.join(5)
    assert calls[:2] == [1, 5]  # one snapshot for the burst that came during the write


def test_kind_check_is_gone_and_the_loop_module_has_no_hidden_clock() -> None:
    assert "CHECK" not in Kind.__members__
    assert loop.next_action([], 0.0, 1.0) == Action()


def test_drift_after_a_delta_with_no_one_elses_change_stops_the_deltas(
    daemon: tuple[Daemon, FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    made, fake = daemon
    fake.writes_streamed, made._watching = True, True
    made.reconcile([event()], read_kernel=True)
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.reconcile([event()], read_kernel=False)  # written as a delta
    wanted = fake.held
    fake.wipe()  # the kernel does not hold what the delta meant, and no one said a word
    made.check_drift()
    assert fake.held == wanted and not fake.deltas
    assert "set changes are written whole with nft from now on" in caplog.text


def test_drift_someone_else_was_seen_making_leaves_the_deltas_on(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    made, fake = daemon
    fake.writes_streamed, made._watching = True, True
    made.reconcile([event()], read_kernel=True)
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.reconcile([event()], read_kernel=False)
    wanted = fake.held
    fake.wipe()
    runner = threading.Thread(target=made._loop)
    runner.start()
    made.triggers.put(Trigger(Kind.KERNEL_CHANGED, "delete rule inet dockwall governed"))
    deadline = time.monotonic() + 2.0
    while fake.held != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    made.triggers.put(Trigger(Kind.STOP, "test"))
    runner.join(5)
    assert fake.held == wanted and fake.deltas  # repaired, and the deltas stay


def test_while_docker_is_away_drift_is_repaired_without_asking_docker(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    """A dockerd that is starting rewrites its firewall (its jumps above dockwall's) and
    starts its containers before its API answers: the loop must not wait on that API (a
    snapshot would block for the API timeout) but put its closed rules back at once."""
    made, fake = daemon
    made.reconcile([event()], read_kernel=True)
    asked = []

    def unreadable(fresh: bool) -> HostState:
        asked.append(fresh)
        raise DockerError("cannot reach Docker")

    made._snapshot = unreadable  # type: ignore[method-assign]
    down = Trigger(Kind.DOCKER_DOWN, "event stream ended")
    made.reconcile([down], read_kernel=True)  # Docker went away: closed to containers
    closed = fake.held
    assert made.host is None and "web:192.0.2.2/32" not in closed and len(asked) == 1
    fake.wipe()  # dockerd starting again: its rules go above dockwall's
    made.reconcile([down, Trigger(Kind.KERNEL_CHANGED, "add rule ip filter FORWARD")], True)
    assert fake.held == closed and len(asked) == 1  # repaired, Docker not asked
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.reconcile([Trigger(Kind.DOCKER_UP, "event stream connected")], read_kernel=True)
    assert made.host is not None and "web:192.0.2.9/32" in fake.held  # back, and followed


def test_a_ruleset_governing_between_asks_for_bridge_filtering_first() -> None:
    """Kernel.before_between runs before such a ruleset is written, and not for others or a
    removal; if it refuses, nothing is written."""
    asked: list[str] = []

    def refuse() -> None:
        asked.append("refused")
        raise BackendError("no br_netfilter; nothing was changed")

    fake = FakeBackend()
    kernel = Kernel(fake, before_between=lambda: asked.append("ensured"))
    plain = Ruleset(("docker0",), (), (), Verdict.DROP)
    kernel.apply(kernel.plan(plain))
    assert asked == []
    between = replace(plain, between_default=Verdict.DROP, allows=host_allows())
    kernel.apply(kernel.plan(between))
    assert asked == ["ensured"]
    kernel.apply(kernel.plan_remove())
    assert asked == ["ensured"]
    kernel.before_between = refuse
    writes = len(fake.writes)
    with pytest.raises(BackendError):
        kernel.apply(kernel.plan(between))
    assert asked[-1] == "refused" and len(fake.writes) == writes


def host_allows() -> tuple[Allow, ...]:
    return (Allow("web", 1, ("any",), None, None, (ipaddress.ip_network("192.0.2.2"),), None),)


def test_run_hands_each_option_to_the_setting_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting added to Settings once shifted the CLI's positional arguments: --watch-kernel
    became a 1 s debounce. Each option must reach the setting it names."""
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text("version: 1\nrules:\n  - name: admins\n    from: [198.51.100.10]\n")
    seen: list[Settings] = []
    monkeypatch.setattr(loop, "start", lambda settings, *rest: seen.append(settings))
    monkeypatch.setattr(app, "choose_backend", lambda *args: "nftables")
    monkeypatch.setattr(app, "backend", lambda name: Kernel(FakeBackend()))
    argv = ["run", "-p", str(policy_path), "--check-interval", "2.5", "--debounce", "0.25"]
    done = CliRunner().invoke(cli.main, [*argv, "--no-watch-kernel"])
    assert done.exit_code == 0, done.output
    assert seen == [
        Settings(policy_path, None, check_interval=2.5, debounce=0.25, watch_kernel=False)
    ]
    assert seen[0].resync_interval == 60.0


@dataclass
class StubWatch:
    """Stands for KernelWatch: whether nftables' change stream vouches for the rules."""

    vouch: bool = True
    marks: int = 0

    def mark(self) -> tuple[int, int]:
        self.marks += 1
        return (1, self.marks)

    def vouches(self, since: tuple[int, int] | None) -> bool:
        return self.vouch and since is not None


def test_a_timed_check_the_change_stream_vouches_for_reads_nothing(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    made, fake = daemon
    fake.writes_streamed = True
    watch = StubWatch()
    made._watch = watch  # type: ignore[assignment]
    made.reconcile([event()], read_kernel=True)  # a read (the mark), then a delta
    assert watch.marks == 1 and made._unconfirmed_delta

    def reads(batch: list[Trigger], busy_ago: float = 0.0, read_ago: float = 0.0) -> bool:
        made._busy_at = time.monotonic() - busy_ago
        made._read_at = time.monotonic() - read_ago
        return made._decide(batch, next_check=0.0).read_kernel

    assert not reads([event()], busy_ago=5)  # an event is not held up by confirming a delta
    assert not reads([], busy_ago=0.5)  # events still coming
    assert reads([], busy_ago=1.5)  # quiet: dockwall's own delta is read back
    made._unconfirmed_delta = False
    assert not reads([], busy_ago=5)
    assert reads([], busy_ago=5, read_ago=61)  # the belt, when quiet
    assert not reads([event()], read_ago=61)
    assert reads([event()], read_ago=121)  # and at most twice the resync interval apart
    assert reads([Trigger(Kind.KERNEL_CHANGED, "x")])  # someone else's change is read
    assert reads([Trigger(Kind.RELOAD, "x")])
    watch.vouch = False
    assert reads([event()])
    watch.vouch = True
    fake.writes_streamed = False  # iptables-legacy: the stream sees none of its writes
    assert reads([event()])
    assert not made._decide([], next_check=time.monotonic() + 5).read_kernel  # not due


def test_kernel_watch_vouches_only_for_transactions_it_has_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = kernelwatch.KernelWatch(Triggers())
    generation = [7]

    def asked() -> int:
        if generation[0] < 0:
            raise OSError("no netlink")
        return generation[0]

    monkeypatch.setattr(rule_changes, "generation", asked)
    assert watch.mark() is None  # not following the stream
    monkeypatch.setattr(watch, "is_alive", lambda: True)
    watch._epoch = 1
    since = watch.mark()
    assert since == (1, 7)
    assert watch.vouches(since)  # nothing committed since the mark
    generation[0] = 8
    assert not watch.vouches(since)  # a transaction not read yet
    watch.seen = (1, 8)
    assert watch.vouches(since)
    watch._epoch = 2  # subscribed again, or messages were dropped
    watch.seen = (2, 8)
    assert not watch.vouches(since)
    assert not watch.vouches(None)
    generation[0] = -1
    assert watch.mark() is None and not watch.vouches((2, 8))
