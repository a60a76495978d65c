"""The daemon's main loop: triggers in, snapshot + compile + apply-if-changed out.

Fail closed throughout: the rules in the kernel are only ever replaced by a complete newer
ruleset, never removed; when Docker can't be read the installed rules stay; when nothing is
installed yet and Docker can't be read, the policy is applied to an empty host (only rules
for every container let anything through).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import docker

from dockwall import record
from dockwall.backends.base import Change, Kernel
from dockwall.compile import policydiff
from dockwall.compile.compiler import Compiled, closed, compile_policy, quarantine_warning
from dockwall.compile.incremental import recompile
from dockwall.daemon import describe, service_manager
from dockwall.daemon.events import EventFollower
from dockwall.daemon.firewalld import FirewalldListener
from dockwall.daemon.kernelwatch import KernelWatch
from dockwall.daemon.metrics import Recorder, repair_cause
from dockwall.daemon.triggers import Kind, Trigger, Triggers, wait
from dockwall.errors import DockerError, DockwallError, PolicyError
from dockwall.host import bridge_filtering, snapshot
from dockwall.logfmt import FIELDS
from dockwall.model.hoststate import Container, HostState, Quarantined
from dockwall.model.policy import Policy, load_policy
from dockwall.model.ruleset import Ruleset

log = logging.getLogger("dockwall.run")
DRIFT = "drift: the installed rules were changed by someone"
FIRST_EVENT_WAIT = 5.0  # seconds to wait at start for the event stream to connect
# seconds after its die that a listing showing a container running is believed stale
# (Docker 20.10 lists it running for ~0.3 s more: see Daemon._dead)
DIED_STALE = 5.0
CHECK_BUDGET = 0.05  # the drift check may use at most this share of one core
CHECK_KINDS = {Kind.FIREWALL_RELOADED, Kind.KERNEL_CHANGED}
# seconds with no trigger after which a timed check reads back dockwall's own last delta
# (while events keep coming, that confirmation waits: a read of a large table takes ~0.3 s,
# and every event arriving meanwhile would wait with it)
CONFIRM_QUIET = 1.0
SNAPSHOT_KINDS = {Kind.EVENT, Kind.DOCKER_UP, Kind.DOCKER_DOWN, Kind.RELOAD, Kind.RESYNC}


@dataclass(frozen=True)
class Action:
    """What the loop does with one batch of triggers."""

    stop: bool = False
    reload: bool = False  # read the policy file again first
    reconcile: bool = False  # snapshot Docker, compile, make the kernel match
    read_kernel: bool = False  # read the kernel (else trust the last apply): a drift check
    check_due: bool = False  # the timed check's turn: the next is due one interval later


def next_action(batch: list[Trigger], now: float, next_check: float) -> Action:
    """The loop's decision, pure. The timed drift check cannot starve: when it is due, the
    kernel is read whatever else the batch asks for (a reconcile then reads it, and repairs
    what drifted along with what Docker changed). Only a batch of Docker events alone, with
    no check due, trusts the last apply."""
    kinds = {t.kind for t in batch}
    if Kind.STOP in kinds:
        return Action(stop=True)
    due = now >= next_check
    reconcile = bool(kinds & SNAPSHOT_KINDS)
    foreign = bool(kinds - {Kind.EVENT})  # not only Docker's doing: RELOAD, DOCKER_UP, CHECK_KINDS
    return Action(
        reload=Kind.RELOAD in kinds,
        reconcile=reconcile,
        read_kernel=due or foreign,
        check_due=due,
    )


@dataclass
class Settings:
    policy_path: Path
    docker_host: str | None
    _: KW_ONLY  # the rest by name: a new setting can't shift what a caller meant
    check_interval: float = 1.0  # seconds between drift checks
    resync_interval: float = 60.0  # seconds between full snapshots that look for a missed event
    debounce: float = 0.0  # extra wait after a trigger (0: none; for comparisons only)
    watch_kernel: bool = True  # follow nftables' change stream to repair at once


@dataclass
class Daemon:
    settings: Settings
    kernel: Kernel[Any, Any, Any]
    policy: Policy
    # remove other backends' rules
    retire: Callable[[Kernel[Any, Any, Any]], list[str]] | None = None
    triggers: Triggers = field(default_factory=Triggers)
    metrics: Recorder = field(default_factory=Recorder)
    host: HostState | None = None
    applied: Ruleset | None = None
    _client: docker.DockerClient | None = None
    _version: str | None = None
    _live_restore: bool = False  # Docker keeps containers running while it is away
    _timings: dict[str, float] = field(default_factory=dict)
    _quarantined: set[str] = field(default_factory=set)  # quarantine warnings already logged
    _watching: bool = False  # nftables' change stream is followed: someone else's change is told
    _unconfirmed_delta: bool = False  # the last write was a delta no read has confirmed since
    _compiled: tuple[Policy, Compiled] | None = None  # the last compile, and of which policy
    _next_resync: float = 0.0  # (monotonic) when the next full snapshot is due
    missed: int = 0  # resyncs that found what the events had not told
    _died: dict[str, float] = field(default_factory=dict)  # id -> (monotonic) time of its die
    _watch: KernelWatch | None = None  # nftables' change stream, while followed
    _mark: tuple[int, int] | None = None  # the watch's mark before the last read of the rules
    _read_at: float = 0.0  # (monotonic) when the rules were last read
    _busy_at: float = 0.0  # (monotonic) when the last batch of triggers was handled

    def run(self) -> None:
        firewalld = FirewalldListener(self.triggers)
        watch = KernelWatch(self.triggers)
        follower = EventFollower(lambda: snapshot.connect(self.settings.docker_host), self.triggers)
        self._signals()
        follower.start()
        firewalld.start()
        if self.settings.watch_kernel:
            watch.start()
            self._watching = True
            self._watch = watch
        # The event stream's first word (connected, or Docker away) joins the first snapshot:
        # one snapshot at start, taken after the stream is listening, so nothing is missed.
        first = wait(self.triggers, FIRST_EVENT_WAIT)
        self.reconcile([Trigger(Kind.DOCKER_UP, "dockwall started", time.time()), *first], True)
        for trigger in first:
            if trigger.kind in {Kind.STOP, Kind.RELOAD}:
                self.triggers.put(trigger)  # for the loop
        if self.applied is not None and self.retire is not None:
            for name in self.retire(self.kernel):
                log.info(f"removed the rules dockwall had installed with {name}")
        service_manager.notify("READY=1")
        log.info("running", extra={FIELDS: {"policy": str(self.settings.policy_path)}})
        try:
            self._loop()
        finally:
            follower.stop()
            firewalld.stop()
            watch.stop()
            service_manager.notify("STOPPING=1")
            log.info("stopped; the rules stay in place")

    def _loop(self) -> None:
        next_check = time.monotonic() + self.settings.check_interval
        ping = service_manager.watchdog_interval()
        while True:
            timeout = next_check - time.monotonic()
            batch = self._next_batch(min(timeout, ping) if ping else timeout)
            action = self._decide(batch, next_check)
            if action.stop:
                return
            if any(t.kind in CHECK_KINDS for t in batch):
                self._unconfirmed_delta = False  # drift now found is someone else's doing
            if action.reload:
                self.reload()
            began = time.monotonic()
            if action.reconcile:
                self.reconcile(batch, action.read_kernel)
            elif action.read_kernel:
                self.check_drift(batch)
            if action.check_due:
                took = time.monotonic() - began
                next_check = time.monotonic() + self._check_pause(took)
            if batch:
                self._busy_at = time.monotonic()
            if ping:
                service_manager.notify("WATCHDOG=1")

    def _decide(self, batch: list[Trigger], next_check: float) -> Action:
        action = next_action(batch, time.monotonic(), next_check)
        if action.read_kernel and action.check_due and self._vouched(batch):
            return replace(action, read_kernel=False)
        return action

    def _vouched(self, batch: list[Trigger]) -> bool:
        """A check due by time alone needs no read of the rules when nftables' change
        stream vouches that only transactions it has read (and told of, if foreign) came
        since the last read: a full read of a large table takes ~0.3 s, and every event
        arriving meanwhile waits. The rules are still read back: after a delta of
        dockwall's own once no trigger came for CONFIRM_QUIET, and at least every
        resync_interval whatever the stream says (a belt for the stream's reading). Both wait
        for a check with no trigger (an event that came is not held up by them), the belt at
        most twice that."""
        now = time.monotonic()
        if any(t.kind is not Kind.EVENT for t in batch):
            return False  # foreign, a reload, Docker back: next_action asked for a read
        if self._watch is None or not self.kernel.backend.writes_streamed:
            return False
        since_read = now - self._read_at
        quiet = not batch and now - self._busy_at >= CONFIRM_QUIET
        if since_read >= 2 * self.settings.resync_interval:
            return False
        if quiet and (self._unconfirmed_delta or since_read >= self.settings.resync_interval):
            return False
        return self._watch.vouches(self._mark)

    def _next_batch(self, timeout: float) -> list[Trigger]:
        """What came within timeout; a RESYNC if nothing did and one is due."""
        batch = wait(self.triggers, timeout)
        if not batch and self._resync_due():
            batch = [Trigger(Kind.RESYNC, "periodic resync", time.time())]
        if batch and self.settings.debounce:
            time.sleep(self.settings.debounce)
            batch += wait(self.triggers, 0)
        return batch

    def _check_pause(self, took: float) -> float:
        """The check interval, stretched so that checking a very large ruleset costs at most
        CHECK_BUDGET of a core (reading 40,000 rules back takes about half a second)."""
        return max(self.settings.check_interval, took / CHECK_BUDGET - took)

    def _signals(self) -> None:
        def reload(signum: int, frame: FrameType | None) -> None:
            self.triggers.put(Trigger(Kind.RELOAD, "SIGHUP"))

        def stop(signum: int, frame: FrameType | None) -> None:
            self.triggers.put(Trigger(Kind.STOP, signal.Signals(signum).name))

        signal.signal(signal.SIGHUP, reload)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def reload(self) -> None:
        try:
            self.policy = load_policy(self.settings.policy_path)
        except PolicyError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            log.error(
                "new policy is invalid; the running rules stay",
                extra={FIELDS: {"problems": problems}},
            )
            return
        log.info("policy reloaded", extra={FIELDS: {"sha256": self.policy.digest[:12]}})

    def reconcile(self, batch: list[Trigger], read_kernel: bool = True) -> None:
        """Snapshot Docker, compile, and make the kernel match. read_kernel=False trusts
        what the last apply left (the batch is only Docker's events, no check is due)."""
        began, received = time.monotonic(), time.time()
        if self._away(batch):
            if read_kernel:
                self.check_drift(batch)
            return
        try:
            host = self._read_host(batch)
        except DockerError as exc:
            self.metrics.docker(False)
            self._docker_unreadable(exc, batch)
            return
        self.metrics.docker(True)
        self._timings = {"snapshot_ms": (time.monotonic() - began) * 1000}
        last = self._compiled
        if last is not None and self.host is not None and last[0] is self.policy:
            compiled = recompile(self.policy, self.host, last[1], host)  # the rules it concerns
        else:
            compiled = compile_policy(self.policy, host)
        self._compiled = (self.policy, compiled)
        self._timings["compile_ms"] = (time.monotonic() - began) * 1000 - self._timings[
            "snapshot_ms"
        ]
        explaining = time.monotonic()
        why = describe.host_changes(self.host, host)
        why += policydiff.rule_changes(self.applied, compiled.ruleset, host.names())
        odd = {quarantine_warning(q) for q in host.quarantined}
        for warning in compiled.warnings:
            new = (
                warning not in self._quarantined
                if warning in odd
                else compiled.ruleset != self.applied
            )
            if self.applied is None or new:
                log.warning(warning)
        self._quarantined = odd  # each quarantine is logged once, when first seen
        self._timings["explain_ms"] = (time.monotonic() - explaining) * 1000
        before = self.applied
        wrote = self._enforce(compiled.ruleset, why, read_kernel)
        in_kernel = time.time()
        if wrote and compiled.ruleset == before:  # the same rules written again: drift
            self.metrics.repaired(repair_cause(batch))
        if wrote:
            recording = time.monotonic()
            self._record(compiled.ruleset, host)
            self._timings["record_ms"] = (time.monotonic() - recording) * 1000
        self.host = host
        if self.applied is compiled.ruleset:  # (else refused: the kernel has none of it)
            self._latencies(batch, received, in_kernel)

    def _away(self, batch: list[Trigger]) -> bool:
        """Docker is away (it went, or never answered, and rules for that are applied) and
        batch holds no sign that it answers again (its event stream back, an event, a policy
        reload): then Docker is not asked, the kernel only checked. A dockerd that is starting
        holds its API socket open but answers only once it has rewritten its firewall rules
        (its jumps above dockwall's) and started its containers: asking it then would hold
        the loop for up to the API timeout, with no drift repaired meanwhile."""
        kinds = {t.kind for t in batch}
        answers = {Kind.DOCKER_UP, Kind.EVENT, Kind.RELOAD}
        return self.host is None and self.applied is not None and not kinds & answers

    def _resync_due(self) -> bool:
        now = time.monotonic()
        if self._next_resync == 0.0:
            self._next_resync = now + self.settings.resync_interval
        return self.host is not None and now >= self._next_resync

    def _read_host(self, batch: list[Trigger]) -> HostState:
        """Only the containers the batch's events are about, where each is about one and the
        last snapshot is known (snapshot.update); else everything (snapshot.take). Every
        resync_interval the whole host is read even for such a batch (or for none: a RESYNC
        trigger), and what the events told is compared with it: a difference is a missed
        event, counted and logged."""
        ids = {t.container for t in batch if t.kind is not Kind.RESYNC}
        only_containers = all(t.kind in {Kind.EVENT, Kind.RESYNC} for t in batch) and "" not in ids
        dead = self._dead(batch)
        resync = self._resync_due()
        if only_containers and not resync and self.host is not None and self._client:
            try:
                told = snapshot.without(snapshot.update(self._client, self.host, ids), dead)
            except DockerError:
                self._client = None
                raise
            if not snapshot.clashes(told, ids):
                return told
            log.debug(
                "a container read again shares an address or host port with one not "
                "read: that one may have stopped unseen; reading every container"
            )
        docker_anew = any(t.kind in {Kind.DOCKER_UP, Kind.DOCKER_DOWN} for t in batch)
        before, client = self.host, self._client
        host = snapshot.without(self._snapshot(docker_anew), dead)
        if resync:
            self._next_resync = time.monotonic() + self.settings.resync_interval
            if only_containers and before is not None and client is not None:
                told = snapshot.update(client, before, ids) if ids else before
                told = snapshot.without(told, dead)
                if not same_host(told, host):
                    self.missed += 1
                    self.metrics.missed_event()
                    log.warning(
                        "resync: Docker's state differed from what its events told (a missed "
                        "event); following the full snapshot",
                        extra={FIELDS: {"missed": self.missed}},
                    )
        return host

    def _dead(self, batch: list[Trigger]) -> set[str]:
        """Containers that died and did not start since, in the last DIED_STALE seconds.
        Docker 20.10 sends a container's die, and its network's disconnect, before its
        listings show it stopped: read then, it still runs, with its address, for as long
        as its network takes to let go (~0.3 s). Another container can be given that
        address meanwhile. A container reported dead is not believed running again until
        it starts."""
        now = time.monotonic()
        for trigger in batch:
            if trigger.kind in {Kind.DOCKER_UP, Kind.DOCKER_DOWN}:
                self._died.clear()
            elif trigger.action == "container die" and trigger.container:
                self._died[trigger.container] = now
            elif trigger.action == "container start":
                self._died.pop(trigger.container, None)
        for cid, at in list(self._died.items()):
            if now - at > DIED_STALE:
                del self._died[cid]
        return set(self._died)

    def _snapshot(self, fresh: bool) -> HostState:
        """Keep one client (and the engine version) while Docker answers; a new one after
        Docker was away or on a reload."""
        if fresh or self._client is None:
            self._client = snapshot.connect(self.settings.docker_host)
            self._version = snapshot.engine_version(self._client)
            info = snapshot.engine_info(self._client)
            self._live_restore = info.get("LiveRestoreEnabled") is True
        try:
            return snapshot.take(self._client, self._version)
        except DockerError:
            self._client = None
            raise

    def _record(self, ruleset: Ruleset, host: HostState) -> None:
        try:
            record.save(str(self.settings.policy_path), self.policy.digest, ruleset, host)
        except OSError as exc:
            log.warning("could not record what was applied", extra={FIELDS: {"error": exc}})

    def check_drift(self, batch: list[Trigger] | None = None) -> None:
        """Read the kernel and put back what was applied. Where the change stream tells of
        every write to the rules (nftables) and none was told since dockwall's last delta,
        drift found now can only be that delta's: deltas stop, changes are written whole.
        batch: the triggers that asked for the check (the repair's cause)."""
        self._timings = {}
        if self.applied is None:
            return
        seen = self._watching and self.kernel.backend.writes_streamed
        suspect = self._unconfirmed_delta and seen
        wrote = self._enforce(self.applied, [DRIFT])
        if wrote:
            self.metrics.repaired(repair_cause(batch or []))
        if wrote and suspect and self.kernel.distrust_deltas():
            log.warning(
                "the kernel differed from dockwall's last delta with no one else's change "
                "seen: set changes are written whole with nft from now on"
            )

    def _enforce(self, ruleset: Ruleset, why: list[str], fresh: bool = True) -> bool:
        """Make the kernel match ruleset; log what changed and why; True if it wrote.
        Errors are logged and retried at the next trigger or check; the kernel keeps what
        it had."""
        began = time.monotonic()
        writing = False
        try:
            if fresh or self.kernel.trusted is None:
                self._mark = self._watch.mark() if self._watch is not None else None
                self._read_at = began
            tx = self.kernel.plan(ruleset, fresh=fresh)
            change = tx.change
            planned = time.monotonic()
            if fresh:
                self._unconfirmed_delta = False
            if change.pending:
                writing = True
                self.kernel.apply(tx)
                self._unconfirmed_delta = change.delta
                self._timings["plan_ms"] = (planned - began) * 1000
                self._timings["apply_ms"] = (time.monotonic() - planned) * 1000
                self.metrics.applied(time.monotonic() - began, ok=True)
                _log_change(change, why, self._timings)
            self.applied = ruleset
            self.metrics.in_sync()
            return change.pending
        except (DockwallError, OSError) as exc:
            if writing:
                self.metrics.applied(time.monotonic() - began, ok=False)
            log.error("could not apply; the previous rules stay", extra={FIELDS: {"error": exc}})
            return False

    def _docker_unreadable(self, exc: DockerError, batch: list[Trigger]) -> None:
        """Docker can't be read. If it just went away (and has no live restore), close: a
        Docker that starts again starts its containers before it answers, handing their
        addresses out anew, so the rules for the old addresses could open the wrong ones.
        At start, keep what is installed (from a dockwall killed earlier); if nothing is,
        install the policy for a host with no containers. Either way `*` rules still work."""
        went_away = any(t.kind is Kind.DOCKER_DOWN for t in batch)
        if went_away and self.host is not None and not self._live_restore:
            log.warning(
                "Docker went away: closed to containers until it is back",
                extra={FIELDS: {"error": exc}},
            )
            known = self.applied.listeners if self.applied is not None else ()
            where = self.applied.proxy_cgroup if self.applied is not None else None
            self._enforce(closed(self.policy, known, where), ["Docker went away"])
            self.host = None
        elif self.applied is None and not self._installed():
            log.warning(
                "Docker unreadable and no rules installed: applying the policy to an "
                "empty host (closed)",
                extra={FIELDS: {"error": exc}},
            )
            last = record.load()
            known, where = (
                (last.ruleset.listeners, last.ruleset.proxy_cgroup) if last else ((), None)
            )
            self._enforce(closed(self.policy, known, where), ["no Docker yet"])
        else:
            log.debug("Docker unreadable; the installed rules stay", extra={FIELDS: {"error": exc}})

    def _installed(self) -> bool:
        try:
            return self.kernel.installed()
        except DockwallError:
            return False

    def _latencies(self, batch: list[Trigger], received: float, in_kernel: float) -> None:
        """Each event's age once its rules are in the kernel (age_ms), and where the time
        went: queued_ms from Docker's timestamp until this reconcile began (the event's way
        to dockwall, its decoding, a reconcile before it), then this reconcile's stages
        (record_ms, writing the apply record, comes after the kernel has the rules)."""
        for trigger in batch:
            if trigger.kind is Kind.EVENT and trigger.at:
                stages = {"queued_ms": (received - trigger.at) * 1000, **self._timings}
                age = (in_kernel - trigger.at) * 1000
                self.metrics.event_in_kernel(age / 1000)
                fields = {"what": trigger.what, "age_ms": age, **stages}
                log.debug("event handled", extra={FIELDS: fields})


def same_host(a: HostState, b: HostState) -> bool:
    """The same containers and quarantined objects, in whatever order."""

    def containers(h: HostState) -> list[Container]:
        return sorted(h.containers, key=lambda c: c.id)

    def odd(h: HostState) -> list[Quarantined]:
        return sorted(h.quarantined, key=lambda q: (q.kind, q.container_id or "", q.name))

    return (
        containers(a) == containers(b)
        and odd(a) == odd(b)
        and replace(a, containers=(), quarantined=()) == replace(b, containers=(), quarantined=())
    )


def _log_change(change: Change[Any], why: list[str], timings: dict[str, float]) -> None:
    added = sum(len(f.added) for f in change.families)
    removed = sum(len(f.removed) for f in change.families)
    hooks = [f"{f.family}: {f.hook}" for f in change.families if f.hook]
    reason = "; ".join((why or [DRIFT]) + hooks)  # nothing on the host or in the policy
    log.info(reason, extra={FIELDS: {"added": added, "removed": removed, **timings}})


def start(
    settings: Settings,
    kernel: Kernel[Any, Any, Any],
    retire: Callable[[Kernel[Any, Any, Any]], list[str]] | None = None,
    metrics: Recorder | None = None,
) -> None:
    """Load the policy (an invalid one stops here, nothing touched) and run until stopped.
    retire, once the first apply is in: remove what other backends had installed. Where
    bridged traffic can't be put through the firewall, the rest of the policy still goes in
    (bridge_filtering.lenient)."""
    kernel.before_between = bridge_filtering.lenient
    policy = load_policy(settings.policy_path)
    Daemon(settings, kernel, policy, retire, metrics=metrics or Recorder()).run()
