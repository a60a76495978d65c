"""Chaos for `dockwall run`: does anyone the policy shuts out get in while the host churns?

    python3 bench/chaos.py --engine 28            # the full run (several minutes)
    python3 bench/chaos.py --engine 20.10 --restarts 20 --docker-restarts 1 --flushes 3 --kills 1

A sandboxed Docker host (root, network namespaces; see harness/dockwall_sandbox) runs the seed
scenario (www-nginx, admin-app, db), three containers labelled public=yes and one labelled
public=no on dbnet with fixed addresses, every one with --restart always. The policy is
examples/policy.yaml plus a rule opening 9000-9099/tcp (the dialed port) of public=yes
containers to anyone via eth0. `dockwall run` enforces it while, one after another in a
shuffled order:

- container restarts (`docker restart -t 0`); one in four is an ADDRESS REUSE instead: a
  public=yes container stops and a container the policy does not open takes its address at
  once (`--ip`), publishing a port in 9000-9099 that the public rule would open if the
  address were still taken for the public container's; then the two swap back;
- dockerd restarts, alternating crash (SIGKILL) and clean (SIGTERM);
- flushes of DOCKWALL-IN and DOCKER-USER, both families (ip6tables on 20.10 has no
  DOCKER-USER: the jump to DOCKWALL is deleted from FORWARD instead); with the nftables
  backend (`auto` picks it on Docker's nftables firewall backend, `--backend`), of the
  chains `forward` and `governed` of `table inet dockwall`;
- `iptables -F INPUT` in both families (the jump to the proxy path goes); with the nftables
  backend, `nft flush chain inet dockwall input`;
- `nft flush ruleset` (what Debian's nftables.service does on every start and reload): every
  table goes, Docker's NAT and filter rules too (iptables-nft's tables are nftables tables),
  so until the next dockerd restart docker-proxy serves every published port through INPUT;
- kill -9 of dockwall, and a restart of it.

Two probers run all the time in the outside namespaces (dockwall_sandbox.streamprobe):

- DENY: the WAN stranger (198.51.100.99, 2001:db8:100::99) and the LAN stranger
  (203.0.113.99, 2001:db8:200::99) connect to every published port the policy does not
  open to them, on the host's address, and to every address any container has had, on the
  ports containers listen on (direct routing). Every completed TCP handshake is a LEAK
  unless the policy opens that port of the container that answered (GET /who names it):
  only www-nginx on 80/443 and public=yes containers on 9000-9099, from WAN via eth0.
- ALLOW: the admin (198.51.100.10, 2001:db8:100::10) connects to every published port, and
  the WAN stranger to the ports the public rules open to it. A failure while the target
  container is known to be up (started and answering inside the host) is WRONGLY BLOCKED.

The report lists every leak with its time, target, who answered and the chaos event just
before it; the longest wrongly-blocked interval after each kind of event; and the worst
address-reuse window. Everything (report.json, raw probe lines, dockwall and dockerd logs)
is kept in --out. Exit status 0 only with no leak and an allowed connection after every
event.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockwall.cli import app
from dockwall_sandbox import (
    ENGINES,
    Sandbox,
    SandboxError,
    cleanup_leftovers,
    unavailable_reason,
)
from dockwall_sandbox import topology as topo
from dockwall_sandbox.dockwall_cli import RunningDaemon
from dockwall_sandbox.netns import enter_argv
from dockwall_sandbox.pythonpath import child_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "policy.yaml"
PUBLIC_RULE = """  - name: public-9000
    from: any
    via: eth0
    to: {label: "public=yes"}
    ports: [9000-9099/tcp]
"""

# -- the scenario -------------------------------------------------------------------------

SEED = ("www-nginx", "admin-app", "db")
PUBLIC = {  # public=yes on dbnet, fixed address, host port -> 80
    "pub-1": (IPv4Address("192.0.2.201"), 9001),
    "pub-2": (IPv4Address("192.0.2.202"), 9002),
    "pub-3": (IPv4Address("192.0.2.203"), 9003),
}
PLAIN = {"plain": (IPv4Address("192.0.2.210"), 9010)}  # public=no, in the public port range
REUSE_PORT = {f"reuse-{n}": 9050 + n for n in (1, 2, 3)}  # takes the address of pub-<n>
ALWAYS = (*SEED, *PUBLIC, *PLAIN)  # the containers with --restart always

PORT_OWNER: dict[int, str] = {
    80: "www-nginx",
    443: "www-nginx",
    8080: "admin-app",
    5432: "db",
    **{port: name for name, (_ip, port) in {**PUBLIC, **PLAIN}.items()},
    **{port: name for name, port in REUSE_PORT.items()},
}
DIRECT_PORTS = {"docker0": (80, 443), "dbnet": (80, 5432)}  # what containers listen on there

WAN_STRANGER = (topo.WAN_STRANGER_4, topo.WAN_STRANGER_6)
LAN_STRANGER = (topo.LAN_STRANGER_4, topo.LAN_STRANGER_6)
ADMIN = (topo.WAN_ADMIN1_4, topo.WAN_ADMIN1_6)

FLUSH_KINDS = ("flush", "inputflush", "rulesetflush")  # someone else's flush, then a repair
UP_GRACE = 0.2  # seconds from a container's start until its httpd surely listens
REPAIR_WAIT = 15.0  # seconds a flush waits for dockwall to put its rules back

KINDS = {
    "start": "(before the first event)",
    "restart": "container restart",
    "reuse": "address reuse",
    "dockerd": "dockerd restart",
    "flush": "flush",
    "inputflush": "flush of INPUT",
    "rulesetflush": "nft flush ruleset",
    "kill": "dockwall kill",
}


def allowed(side: str, dialed: int, who: str | None) -> bool:
    """What the chaos policy lets a stranger on ``side`` reach: written out by hand from the
    policy file, not asked of dockwall (which is what is under test)."""
    if side != "wan" or who is None:  # the LAN stranger is in no group, and via: eth0 only
        return False
    if who == "www-nginx":
        return dialed in (80, 443)
    if who in PUBLIC:
        return 9000 <= dialed <= 9099
    return False


# -- probe targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One thing a prober connects to; ``id`` encodes all of it (the probe lines carry it)."""

    role: str  # "deny": any connection is a leak unless allowed(); "allow": must connect
    side: str  # "wan" | "lan": the namespace the prober runs in
    kind: str  # "host": a published port on the host's address; "direct": a container address
    src: str
    dst: str
    port: int

    @property
    def id(self) -> str:
        return "|".join((self.role, self.side, self.kind, self.src, self.dst, str(self.port)))

    @classmethod
    def parse(cls, text: str) -> Target:
        role, side, kind, src, dst, port = text.split("|")
        return cls(role, side, kind, src, dst, int(port))

    def label(self) -> str:
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        return f"{self.src} -> {dst}:{self.port} ({self.kind})"


def host_targets(
    role: str, side: str, sources: Iterable[IPv4Address | IPv6Address]
) -> list[Target]:
    link = topo.WAN_LINK if side == "wan" else topo.LAN_LINK
    found = []
    for src in sources:
        host = link.host4 if src.version == 4 else link.host6
        for port, owner in sorted(PORT_OWNER.items()):
            opened = allowed(side, port, owner)
            if (role == "deny" and not opened) or (role == "allow" and (src in ADMIN or opened)):
                found.append(Target(role, side, "host", str(src), str(host), port))
    return found


def direct_targets(side: str, addresses: Iterable[str]) -> list[Target]:
    """The deny prober aims at every container address ever seen: stale rules for an address
    that moved to another container are what it is looking for."""
    sources = WAN_STRANGER if side == "wan" else LAN_STRANGER
    found = []
    for text in sorted(addresses):
        address = ip_address(text)
        net = "dbnet" if address in topo.DBNET_V4 or address in topo.DBNET_V6 else "docker0"
        src = next(s for s in sources if s.version == address.version)
        found += [
            Target("deny", side, "direct", str(src), text, port) for port in DIRECT_PORTS[net]
        ]
    return found


# -- what happened ------------------------------------------------------------------------------


@dataclass
class Event:
    kind: str
    detail: str
    t0: float  # the chaos action began
    t1: float = 0.0  # it was done, and the containers it touched answered inside the host
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """One probe attempt, as streamprobe printed it."""

    t: float
    d: float
    target: Target
    conn: bool
    http: bool
    who: str | None


@dataclass(frozen=True)
class Options:
    engine: str
    backend: str  # dockwall's: auto, iptables or nftables
    restarts: int
    docker_restarts: int
    flushes: int
    kills: int
    input_flushes: int
    ruleset_flushes: int
    reuse_every: int
    gap: float
    hold: float
    settle: float
    period: float
    probe_timeout: float
    seed: int
    out: Path


class Chaos:
    """Drives one sandbox: scenario, dockwall, probers, the shuffled chaos events."""

    def __init__(self, box: Sandbox, opts: Options) -> None:
        self.box = box
        self.opts = opts
        self.out = opts.out
        self.policy = self.out / "policy.yaml"
        self.events: list[Event] = []
        self.up: dict[str, list[list[float]]] = {}  # container -> [[start, end], ...]
        self.hostnames: dict[str, str] = {}  # container hostname -> name
        self.addresses: set[str] = set()
        self.owners: list[tuple[float, dict[str, str]]] = []  # (when, address -> container)
        self.daemon: RunningDaemon | None = None
        self.backend = app.choose_backend(opts.backend, None, box.docker_host)
        self.daemons = 0
        self.unexpected_exits: list[dict[str, Any]] = []
        self.probers: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0.0
        self.ended = 0.0

    # -- set-up and tear-down --------------------------------------------------------------

    def setup(self) -> None:
        box = self.box
        box.start_seed_scenario(restart="always", stop_timeout=1)
        for name, (ip, port) in PUBLIC.items():
            self._run(name, port, ip, {"public": "yes"}, restart="always")
        for name, (ip, port) in PLAIN.items():
            self._run(name, port, ip, {"public": "no"}, restart="always")
        self._mark_up(ALWAYS, time.time())
        self.policy.write_text(EXAMPLE.read_text() + PUBLIC_RULE)
        self._start_dockwall()
        self.refresh()
        for side in ("wan", "lan"):
            self._start_prober(side)
        self.started = time.time()
        time.sleep(max(self.opts.settle, 1.0))

    def _run(
        self,
        name: str,
        port: int,
        ip: IPv4Address,
        labels: dict[str, str],
        restart: str | None = None,
    ) -> None:
        info = self.box.start_container(
            name,
            [(port, 80)],
            network="dbnet",
            labels=labels,
            ip=ip,
            restart=restart,
            stop_timeout=1,
        )
        self.hostnames[info.id[:12]] = name

    def _start_dockwall(self) -> None:
        self.daemons += 1
        log = self.out / f"dockwall-{self.daemons}.log"
        self.daemon = RunningDaemon(self.box, self.policy, log, "--backend", self.backend)
        if not self.daemon.wait_for("msg=running", timeout=60):
            raise SandboxError(f"dockwall did not start:\n{self.daemon.log()[-3000:]}")

    def _start_prober(self, side: str) -> None:
        env = child_env()
        argv = enter_argv(
            self.box.outside_ns(side),
            [
                sys.executable,
                "-m",
                "dockwall_sandbox.streamprobe",
                "--targets",
                str(self.out / f"targets-{side}.json"),
                "--timeout",
                str(self.opts.probe_timeout),
                "--period",
                str(self.opts.period),
            ],
        )
        with (
            (self.out / f"probes-{side}.jsonl").open("wb") as stdout,
            (self.out / f"prober-{side}.err").open("wb") as stderr,
        ):
            self.probers[side] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env
            )

    def teardown(self) -> None:
        self.ended = time.time()
        for proc in self.probers.values():
            _stop(proc, signal.SIGTERM)
        if self.daemon is not None:
            self.daemon.stop()
        with contextlib.suppress(OSError):
            shutil.copy(self.box.dirs.log, self.out / "dockerd.log")
        (self.out / "events.json").write_text(
            json.dumps([asdict(e) for e in self.events], indent=1)
        )

    # -- bookkeeping -----------------------------------------------------------------------

    def _mark_up(self, names: Iterable[str], at: float) -> None:
        for name in names:
            self.up.setdefault(name, []).append([at, float("inf")])

    def _mark_up_since_start(self, names: Iterable[str]) -> None:
        """Up from when Docker started each container (plus UP_GRACE for httpd to listen):
        after a dockerd restart they run, and must be reachable, before its API answers."""
        for name in names:
            self._mark_up([name], min(_started_at(self.box, name) + UP_GRACE, time.time()))

    def _mark_down(self, names: Iterable[str], at: float) -> None:
        for name in names:
            spans = self.up.get(name)
            if spans and spans[-1][1] == float("inf"):
                spans[-1][1] = at

    def refresh(self) -> None:
        """Learn the running containers' hostnames and addresses; rewrite the targets."""
        listed = self.box.docker("ps", "-q", timeout=30).stdout.split()
        owners: dict[str, str] = {}
        if listed:
            for data in json.loads(self.box.docker("inspect", *listed, timeout=30).stdout):
                name = data["Name"].lstrip("/")
                self.hostnames[data["Config"]["Hostname"]] = name
                for endpoint in data["NetworkSettings"]["Networks"].values():
                    for key in ("IPAddress", "GlobalIPv6Address"):
                        if endpoint.get(key):
                            owners[str(ip_address(endpoint[key]))] = name
        self.addresses.update(owners)
        self.owners.append((time.time(), owners))
        self._write_targets()

    def _write_targets(self) -> None:
        wan = host_targets("deny", "wan", WAN_STRANGER) + direct_targets("wan", self.addresses)
        wan += host_targets("allow", "wan", (*ADMIN, *WAN_STRANGER))
        lan = host_targets("deny", "lan", LAN_STRANGER) + direct_targets("lan", self.addresses)
        for side, targets in (("wan", wan), ("lan", lan)):
            path = self.out / f"targets-{side}.json"
            rows = [
                {"id": t.id, "src": t.src, "dst": t.dst, "port": t.port}
                for t in sorted(set(targets), key=lambda t: t.id)
            ]
            temp = path.with_suffix(".tmp")
            temp.write_text(json.dumps(rows))
            temp.replace(path)

    # -- the chaos -------------------------------------------------------------------------

    def plan(self) -> list[str]:
        opts = self.opts
        reuses = opts.restarts // opts.reuse_every if opts.reuse_every else 0
        kinds = ["reuse"] * reuses + ["restart"] * (opts.restarts - reuses)
        kinds += [
            f"dockerd-{'crash' if i % 2 == 0 else 'clean'}" for i in range(opts.docker_restarts)
        ]
        kinds += ["flush"] * opts.flushes + ["kill"] * opts.kills
        kinds += ["inputflush"] * opts.input_flushes
        kinds += ["rulesetflush"] * opts.ruleset_flushes
        random.Random(opts.seed).shuffle(kinds)
        return kinds

    def run_events(self) -> None:
        rng = random.Random(self.opts.seed + 1)
        failures = 0
        for number, kind in enumerate(self.plan(), start=1):
            event = Event(kind.split("-")[0], "", time.time())
            self.events.append(event)
            try:
                self._do(kind, event, rng)
            except SandboxError as exc:
                failures += 1
                event.extra["error"] = str(exc)[-2000:]
                print(f"event {number} ({kind}) failed: {str(exc)[:500]}", file=sys.stderr)
                if failures > 10:
                    raise
            event.t1 = event.t1 or time.time()
            self._check_dockwall(event)
            self.refresh()
            if number % 20 == 0:
                print(f"  {number} events, {time.time() - self.started:.0f}s", file=sys.stderr)
            time.sleep(self.opts.gap)
        time.sleep(self.opts.settle)

    def _do(self, kind: str, event: Event, rng: random.Random) -> None:
        if kind == "restart":
            self.restart_container(event, rng.choice(ALWAYS))
        elif kind == "reuse":
            self.reuse(event, rng.choice(sorted(PUBLIC)))
        elif kind.startswith("dockerd"):
            self.restart_dockerd(event, crash=kind.endswith("crash"))
        elif kind == "flush":
            self.flush(event)
        elif kind == "inputflush":
            self.flush_input(event)
        elif kind == "rulesetflush":
            self.flush_ruleset(event)
        else:
            self.kill_dockwall(event)

    def restart_container(self, event: Event, name: str) -> None:
        event.detail = name
        self._mark_down([name], event.t0)
        self.box.docker("restart", "-t", "0", name)
        self.box.wait_running([name])
        event.t1 = time.time()
        self._mark_up_since_start([name])

    def reuse(self, event: Event, public: str) -> None:
        address, _port = PUBLIC[public]
        reuser = f"reuse-{public.split('-')[1]}"
        event.detail = f"{public} -> {reuser} at {address}"
        self._mark_down([public], event.t0)
        self.box.docker("stop", "-t", "0", public)
        self._run(reuser, REUSE_PORT[reuser], address, {"public": "no"})
        ready = time.time()
        self._mark_up([reuser], ready)
        event.extra.update(
            reuser=reuser,
            address=str(address),
            port=REUSE_PORT[reuser],
            reuser_started=_started_at(self.box, reuser),
            reuser_ready=ready,
        )
        time.sleep(self.opts.hold)
        back = time.time()
        event.extra["swap_back"] = back
        self._mark_down([reuser], back)
        self.box.remove_container(reuser)
        self.box.docker("start", public)
        self.box.wait_running([public])
        event.t1 = time.time()
        self._mark_up_since_start([public])

    def restart_dockerd(self, event: Event, crash: bool) -> None:
        event.detail = "crash (SIGKILL)" if crash else "clean (SIGTERM)"
        self._mark_down(ALWAYS, event.t0)
        self.box.restart_engine(crash=crash)
        event.extra["api_back"] = time.time()
        self.box.wait_running(list(ALWAYS), timeout=90)
        event.t1 = time.time()
        self._mark_up_since_start(ALWAYS)

    def flush(self, event: Event) -> None:
        if self.backend == "nftables":
            self._flush_nftables(event)
        else:
            self._flush_iptables(event)
        self._await_repair(event)

    def flush_input(self, event: Event) -> None:
        """The proxy path's hook flushed (what a firewall script's reset does): `iptables -F
        INPUT` in both families, or the nftables backend's input chain; gone until dockwall
        puts it back."""
        if self.backend == "nftables":
            self.box.run_in_host(["nft", "flush", "chain", "inet", "dockwall", "input"])
            event.detail = "nft flush chain inet dockwall input"
        else:
            for tool in ("iptables", "ip6tables"):
                self.box.run_in_host([tool, "-w", "-F", "INPUT"], check=False)
            event.detail = "iptables -F INPUT, ip6tables -F INPUT"
        self._await_repair(event)

    def flush_ruleset(self, event: Event) -> None:
        """`nft flush ruleset`, as Debian's nftables.service does on every start and reload:
        every table goes, Docker's too (iptables-nft's included), so Docker's NAT is gone
        until the next dockerd restart and docker-proxy serves every published port. Probed
        like that for --hold seconds after dockwall's repair; then dockerd is restarted, as
        the operator must (Docker can't start a container without its NAT chains)."""
        self.box.run_in_host(["nft", "flush", "ruleset"])
        event.detail = "nft flush ruleset, then a dockerd restart"
        self._await_repair(event)
        repaired = event.t1
        time.sleep(self.opts.hold)
        self._mark_down(ALWAYS, time.time())
        self.box.restart_engine(crash=False)
        self.box.wait_running(list(ALWAYS), timeout=90)
        event.t1 = time.time()
        event.extra["repaired_at"] = repaired
        self._mark_up_since_start(ALWAYS)

    def _await_repair(self, event: Event) -> None:
        """Wait for dockwall's repair, so that the window is this flush's alone."""
        flushed_at = time.time()
        while not self._repaired():
            if time.time() - flushed_at > REPAIR_WAIT:
                event.extra["repaired_after_s"] = None
                return
            time.sleep(0.02)
        event.t1 = time.time()
        event.extra["repaired_after_s"] = round(event.t1 - flushed_at, 3)

    def _flush_nftables(self, event: Event) -> None:
        """Both chains of dockwall's table, one transaction: as `nft flush chain` by hand."""
        script = "flush chain inet dockwall governed\nflush chain inet dockwall forward\n"
        self.box.run_in_host(["nft", "-f", "-"], input=script, check=False)
        event.detail = "nft flush chain inet dockwall governed, forward"

    def _flush_iptables(self, event: Event) -> None:
        done = []
        for tool in ("iptables", "ip6tables"):
            self.box.run_in_host([tool, "-w", "-F", "DOCKWALL-IN"], check=False)
            flushed = self.box.run_in_host([tool, "-w", "-F", "DOCKER-USER"], check=False)
            if flushed.returncode == 0:
                done.append(f"{tool} -F DOCKWALL-IN, -F DOCKER-USER")
            else:  # no DOCKER-USER in this family: the jump sits in FORWARD
                self.box.run_in_host([tool, "-w", "-D", "FORWARD", "-j", "DOCKWALL"], check=False)
                done.append(f"{tool} -F DOCKWALL-IN, -D FORWARD -j DOCKWALL")
        event.detail = "; ".join(done)

    def _repaired(self) -> bool:
        """dockwall's rules are back: DOCKWALL-IN has rules, a hook jumps to DOCKWALL and INPUT
        to DOCKWALL-INPUT; with nftables, `forward` goes to `governed`, `governed` ends in its
        verdict and `input` goes to `proxy`."""
        if self.backend == "nftables":
            table = self.box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False)
            governed = table.stdout.partition("chain governed {")[2].partition("}")[0]
            hooked = "goto governed" in table.stdout and "goto proxy" in table.stdout
            return hooked and bool(re.search(r"drop|reject", governed))
        for tool in ("iptables", "ip6tables"):
            rules = self.box.run_in_host([tool, "-w", "-S"], check=False).stdout
            if "-A DOCKWALL-IN " not in rules:
                return False
            if not re.search(r"^-A (DOCKER-USER|FORWARD) -j DOCKWALL$", rules, re.MULTILINE):
                return False
            if not re.search(r"^-A INPUT -j DOCKWALL-INPUT$", rules, re.MULTILINE):
                return False
        return True

    def kill_dockwall(self, event: Event) -> None:
        assert self.daemon is not None
        event.detail = f"kill -9 {self.daemon.proc.pid}"
        self.daemon.stop(signal.SIGKILL)
        self._start_dockwall()

    def _check_dockwall(self, event: Event) -> None:
        """A dockwall that died by itself is a finding: note it, start another."""
        assert self.daemon is not None
        code = self.daemon.proc.poll()
        if code is None:
            return
        self.unexpected_exits.append(
            {"after": event.kind, "at": time.time(), "code": code, "log": self.daemon.log_path.name}
        )
        self.daemon.stop()
        self._start_dockwall()


def _stop(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _started_at(box: Sandbox, name: str) -> float:
    """A container's State.StartedAt as time.time() (Docker prints nanoseconds)."""
    text = box.docker("inspect", "-f", "{{.State.StartedAt}}", name).stdout.strip()
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        return time.time()
    whole, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float(f"0.{fraction}") if fraction else 0.0)


# -- analysis --------------------------------------------------------------------------------


def read_records(paths: Iterable[Path]) -> Iterator[Record]:
    for path in paths:
        with path.open(errors="replace") as handle:
            for line in handle:
                try:
                    raw = json.loads(line)
                    yield Record(
                        float(raw["t"]),
                        float(raw["d"]),
                        Target.parse(raw["id"]),
                        bool(raw["conn"]),
                        bool(raw["http"]),
                        raw.get("who"),
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short when the prober was stopped


class Timeline:
    """The chaos events in order, to say which one came last before a moment."""

    def __init__(self, events: list[Event], started: float) -> None:
        self.events = [Event("start", "", started, started), *events]
        self.starts = [e.t0 for e in self.events]

    def before(self, moment: float) -> Event:
        return self.events[max(bisect.bisect_right(self.starts, moment) - 1, 0)]

    def recent(self, moment: float, seconds: float = 3.0) -> list[str]:
        """The events that began in the ``seconds`` before ``moment``, oldest first."""
        return [
            f"{KINDS[e.kind]} {e.detail} ({e.t0 - moment:+.2f}s)".replace("  ", " ")
            for e in self.events
            if moment - seconds <= e.t0 <= moment and e.kind != "start"
        ]

    def next_start(self, event: Event, end: float) -> float:
        index = self.events.index(event)
        return self.events[index + 1].t0 if index + 1 < len(self.events) else end


def last_owner(owners: list[tuple[float, dict[str, str]]], target: Target, moment: float) -> str:
    """Who had the target's address (or published its port) when last looked at."""
    if target.kind == "host":
        return PORT_OWNER[target.port]
    seen = [found for when, found in owners if when <= moment]
    return seen[-1].get(target.dst, "(nobody)") if seen else "(not looked yet)"


def find_leaks(
    records: list[Record],
    hostnames: dict[str, str],
    timeline: Timeline,
    owners: list[tuple[float, dict[str, str]]],
) -> tuple[list[dict[str, Any]], int]:
    """Completed handshakes of the deny prober the policy does not allow (and how many were
    allowed after all, by who answered: www-nginx reached at its own address on 80)."""
    leaks, by_policy = [], 0
    for rec in records:
        if rec.target.role != "deny" or not rec.conn:
            continue
        who = hostnames.get(rec.who or "", rec.who)
        if allowed(rec.target.side, rec.target.port, who):
            by_policy += 1
            continue
        event = timeline.before(rec.t)
        leaks.append(
            {
                "t": rec.t,
                "d": rec.d,
                "target": rec.target.label(),
                "side": rec.target.side,
                "port": rec.target.port,
                "answered_by": who or ("(no HTTP reply)" if not rec.http else "(unnamed)"),
                "event": event.kind,
                "event_detail": event.detail,
                "after_event_s": round(rec.t - event.t0, 3),
                "events_in_last_3s": timeline.recent(rec.t),
                "last_known_owner": last_owner(owners, rec.target, rec.t),
            }
        )
    return leaks, by_policy


def _covering(spans: list[list[float]], start: float, end: float) -> int | None:
    """Index of the up-span holding [start, end], or None."""
    for index, (low, high) in enumerate(spans):
        if low <= start and end <= high:
            return index
    return None


def blocked_intervals(
    records: list[Record], up: dict[str, list[list[float]]], timeline: Timeline
) -> list[dict[str, Any]]:
    """Runs of failed allow-prober attempts while the target's container was known up: from
    the first failure to the next success (or to the end of the up-span: unrecovered)."""
    found: list[dict[str, Any]] = []
    per_target: dict[Target, list[Record]] = {}
    for rec in records:
        if rec.target.role == "allow":
            per_target.setdefault(rec.target, []).append(rec)
    for target, recs in per_target.items():
        spans = up.get(PORT_OWNER[target.port], [])
        found += _runs(target, sorted(recs, key=lambda r: r.t), spans, timeline)
    return found


def _runs(
    target: Target, recs: list[Record], spans: list[list[float]], timeline: Timeline
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    first: Record | None = None
    first_span: int | None = None
    for rec in recs:
        span = _covering(spans, rec.t, rec.t + rec.d)
        if first is not None and span != first_span:  # the container went down: cut short
            assert first_span is not None
            runs.append(_run(target, first, spans[first_span][1], False, timeline))
            first = None
        if span is None:
            continue
        if not rec.http and first is None:
            first, first_span = rec, span
        elif rec.http and first is not None:
            runs.append(_run(target, first, rec.t, True, timeline))
            first = None
    if first is not None:
        runs.append(_run(target, first, recs[-1].t + recs[-1].d, False, timeline))
    return runs


def _run(
    target: Target, first: Record, end: float, recovered: bool, timeline: Timeline
) -> dict[str, Any]:
    event = timeline.before(first.t)
    return {
        "target": target.label(),
        "from": first.t,
        "seconds": round(end - first.t, 3),
        "recovered": recovered,
        "first_failure": _failure(first),
        "event": event.kind,
        "event_detail": event.detail,
        "after_event_s": round(first.t - event.t0, 3),
    }


def _failure(rec: Record) -> str:
    if rec.conn:
        return "connected, no HTTP reply"
    return "no answer" if rec.d >= 0.2 else "refused or unreachable"


def success_after_events(records: list[Record], timeline: Timeline, end: float) -> dict[str, Any]:
    """Per kind: how many events were followed, before the next one, by an allowed success."""
    ok_times = sorted(r.t for r in records if r.target.role == "allow" and r.http)
    result: dict[str, dict[str, int]] = {}
    for event in timeline.events:
        low, high = event.t1 or event.t0, timeline.next_start(event, end)
        index = bisect.bisect_left(ok_times, low)
        hit = index < len(ok_times) and ok_times[index] < high
        counts = result.setdefault(event.kind, {"events": 0, "with_success": 0})
        counts["events"] += 1
        counts["with_success"] += int(hit)
    return result


def reuse_windows(
    events: list[Event], leaks: list[dict[str, Any]], records: list[Record]
) -> list[dict[str, Any]]:
    """Per address reuse: how long after the reusing container started the deny prober still
    got into it (0 if never), and when it was first seen blocked there."""
    windows = []
    for event in events:
        if event.kind != "reuse" or "reuser_started" not in event.extra:
            continue
        extra = event.extra
        start, back = extra["reuser_started"], extra["swap_back"]
        mine = [
            leak
            for leak in leaks
            if leak["answered_by"] == extra["reuser"] and start - 1 <= leak["t"] <= back + 1
        ]
        blocked = [
            r.t
            for r in records
            if not r.conn and start <= r.t <= back and _aims_at_reuser(r.target, extra)
        ]
        windows.append(
            {
                "detail": event.detail,
                "reuser_started": start,
                "leaks": len(mine),
                "window_s": round(
                    max((lk["t"] + lk["d"] for lk in mine), default=start) - start, 3
                ),
                "first_blocked_probe_after_s": round(min(blocked) - start, 3) if blocked else None,
                "held_s": round(back - start, 3),
            }
        )
    return windows


def _aims_at_reuser(target: Target, extra: dict[str, Any]) -> bool:
    """A WAN deny target that reaches the reusing container: its published port on the host,
    or its (the public container's) address on 80. The public rule only covers WAN."""
    if target.role != "deny" or target.side != "wan":
        return False
    if target.kind == "host":
        return bool(target.port == extra["port"])
    return target.dst == extra["address"] and target.port == 80


def analyse(chaos: Chaos, engine_version: str) -> dict[str, Any]:
    records = list(read_records(chaos.out.glob("probes-*.jsonl")))
    timeline = Timeline(chaos.events, chaos.started)
    leaks, by_policy = find_leaks(records, chaos.hostnames, timeline, chaos.owners)
    blocked = blocked_intervals(records, chaos.up, timeline)
    attempts = Counter(r.target.role for r in records)
    return {
        "engine": chaos.opts.engine,
        "backend": chaos.backend,
        "engine_version": engine_version,
        "options": {k: str(v) for k, v in asdict(chaos.opts).items()},
        "seconds": round(chaos.ended - chaos.started, 1),
        "events": dict(Counter(e.kind for e in chaos.events)),
        "event_errors": [asdict(e) for e in chaos.events if "error" in e.extra],
        "attempts": {"deny": attempts["deny"], "allow": attempts["allow"]},
        "allow_successes": sum(1 for r in records if r.target.role == "allow" and r.http),
        "deny_reached_allowed_by_policy": by_policy,
        "leaks": leaks,
        "leaks_by_event": _leaks_by_event(leaks, timeline),
        "blocked_longest_by_event": _longest_by_event(blocked),
        "blocked_intervals": len(blocked),
        "allowed_after_event": success_after_events(records, timeline, chaos.ended),
        "reuse_windows": reuse_windows(chaos.events, leaks, records),
        "dockwall_unexpected_exits": chaos.unexpected_exits,
        "flush_repairs_s": [
            e.extra.get("repaired_after_s") for e in chaos.events if e.kind in FLUSH_KINDS
        ],
        "flush_repairs": [
            {"kind": e.kind, "s": e.extra.get("repaired_after_s")}
            for e in chaos.events
            if e.kind in FLUSH_KINDS
        ],
    }


def _leaks_by_event(leaks: list[dict[str, Any]], timeline: Timeline) -> dict[str, Any]:
    grouped: dict[str, dict[str, Any]] = {}
    for event in timeline.events:
        mine = [lk for lk in leaks if timeline.before(lk["t"]) is event]
        if not mine:
            continue
        entry = grouped.setdefault(event.kind, {"leaks": 0, "events": 0, "longest_window_s": 0.0})
        entry["leaks"] += len(mine)
        entry["events"] += 1
        window = max(lk["t"] + lk["d"] for lk in mine) - event.t0
        entry["longest_window_s"] = round(max(entry["longest_window_s"], window), 3)
    return grouped


def _longest_by_event(blocked: list[dict[str, Any]]) -> dict[str, Any]:
    longest: dict[str, dict[str, Any]] = {}
    for run in blocked:
        best = longest.get(run["event"])
        if best is None or run["seconds"] > best["seconds"]:
            longest[run["event"]] = run
    return longest


# -- the report ----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    lines = [
        f"dockwall chaos on Docker {report['engine_version']} (engine {report['engine']}), "
        f"{report['seconds']}s of probing",
        "events: " + ", ".join(f"{KINDS[k]} {n}" for k, n in report["events"].items()),
        f"connections attempted: disallowed prober {report['attempts']['deny']}, "
        f"allowed prober {report['attempts']['allow']} ({report['allow_successes']} answered)",
    ]
    if report["event_errors"]:
        lines.append(f"chaos actions that failed: {len(report['event_errors'])} (see report.json)")
    if report["dockwall_unexpected_exits"]:
        lines.append(f"dockwall exited by itself: {report['dockwall_unexpected_exits']}")
    lines += _render_leaks(report)
    lines.append("allowed prober, longest wrongly-blocked interval after each kind of event:")
    for kind, label in KINDS.items():
        run = report["blocked_longest_by_event"].get(kind)
        after = report["allowed_after_event"].get(kind, {"events": 0, "with_success": 0})
        text = (
            "none"
            if run is None
            else (
                f"{run['seconds']:.2f}s {run['target']} ({run['first_failure']}, "
                f"{'recovered' if run['recovered'] else 'NOT recovered'}, "
                f"{run['after_event_s']:+.2f}s after {run['event_detail'] or kind})"
            )
        )
        lines.append(
            f"  {label:26} {text}; succeeded after {after['with_success']}/{after['events']}"
        )
    lines += _render_reuse(report["reuse_windows"])
    repairs = report["flush_repairs_s"]
    if repairs:
        done = [r for r in repairs if r is not None]
        lines.append(
            f"flush repaired by dockwall (rules back, seen in iptables -S or nft list): "
            f"{len(done)}/{len(repairs)}, longest {max(done, default=0.0):.2f}s, "
            f"median {sorted(done)[len(done) // 2] if done else 0.0:.2f}s"
        )
    return "\n".join(lines)


def _render_leaks(report: dict[str, Any]) -> list[str]:
    leaks = report["leaks"]
    lines = [f"LEAKS (disallowed source got a connection): {len(leaks)}"]
    for kind, entry in report["leaks_by_event"].items():
        lines.append(
            f"  after {KINDS[kind]}: {entry['leaks']} connections after {entry['events']} "
            f"events, longest window {entry['longest_window_s']:.2f}s from the event's start"
        )
    for leak in leaks[:200]:
        stamp = datetime.fromtimestamp(leak["t"]).strftime("%H:%M:%S.%f")[:-3]
        owner = leak["last_known_owner"]
        lines.append(
            f"  {stamp} {leak['target']} answered by {leak['answered_by']}"
            f"{'' if owner == leak['answered_by'] else f' (last known owner: {owner})'}; "
            f"{leak['after_event_s']:+.2f}s after {KINDS[leak['event']]} {leak['event_detail']}"
        )
        if len(leak["events_in_last_3s"]) > 1:
            lines.append(f"      events in the 3s before: {'; '.join(leak['events_in_last_3s'])}")
    if len(leaks) > 200:
        lines.append(f"  ... {len(leaks) - 200} more in report.json")
    return lines


def _render_reuse(windows: list[dict[str, Any]]) -> list[str]:
    if not windows:
        return ["address reuse: none happened"]
    worst = max(windows, key=lambda w: w["window_s"])
    leaky = sum(1 for w in windows if w["leaks"])
    seen = [w["first_blocked_probe_after_s"] for w in windows if w["first_blocked_probe_after_s"]]
    return [
        f"address reuse: {len(windows)} swaps, {leaky} with leaks; worst window "
        f"{worst['window_s']:.2f}s ({worst['detail']}, {worst['leaks']} leaked connections); "
        f"the prober first saw the reused address blocked at most "
        f"{max(seen, default=0.0):.2f}s after the reusing container started"
    ]


def passed(report: dict[str, Any]) -> bool:
    recovered = all(
        c["with_success"] == c["events"] for c in report["allowed_after_event"].values()
    )
    repaired = all(r is not None for r in report.get("flush_repairs_s", []))
    return bool(
        not report["leaks"] and recovered and repaired and not report["dockwall_unexpected_exits"]
    )


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=list(ENGINES), default="28")
    parser.add_argument("--backend", choices=app.BACKENDS, default="auto", help="dockwall's")
    parser.add_argument(
        "--restarts", type=int, default=200, help="container restarts (with reuses)"
    )
    parser.add_argument("--docker-restarts", type=int, default=5, help="alternating crash/clean")
    parser.add_argument("--flushes", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3, help="kill -9 of dockwall, and restart")
    parser.add_argument("--input-flushes", type=int, default=10, help="iptables -F INPUT")
    parser.add_argument(
        "--ruleset-flushes", type=int, default=3, help="nft flush ruleset (Docker's rules too)"
    )
    parser.add_argument("--reuse-every", type=int, default=4, help="one restart in N is a reuse")
    parser.add_argument("--gap", type=float, default=0.6, help="seconds after each event")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds a reusing container lives")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before/after events")
    parser.add_argument(
        "--period", type=float, default=0.3, help="seconds between probes of a target"
    )
    parser.add_argument("--probe-timeout", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the report, logs and raw probes")
    args = parser.parse_args(argv)
    out = args.out or Path(f"/tmp/dockwall-chaos-{args.engine}-{int(time.time())}")
    return Options(
        engine=args.engine,
        backend=args.backend,
        restarts=args.restarts,
        docker_restarts=args.docker_restarts,
        flushes=args.flushes,
        kills=args.kills,
        input_flushes=args.input_flushes,
        ruleset_flushes=args.ruleset_flushes,
        reuse_every=args.reuse_every,
        gap=args.gap,
        hold=args.hold,
        settle=args.settle,
        period=args.period,
        probe_timeout=args.probe_timeout,
        seed=args.seed,
        out=out,
    )


def run(opts: Options) -> dict[str, Any]:
    """Run the chaos and return the report (also written to OUT/report.json and report.txt)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    cleanup_leftovers()
    with Sandbox(opts.engine) as box:
        chaos = Chaos(box, opts)
        try:
            chaos.setup()
            version = box.engine_version()
            chaos.run_events()
        finally:
            chaos.teardown()
    report = analyse(chaos, version)
    (opts.out / "report.json").write_text(json.dumps(report, indent=1))
    (opts.out / "report.txt").write_text(render(report) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    reason = unavailable_reason(opts.engine)
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    report = run(opts)
    print(render(report))
    print(f"(everything is in {opts.out})")
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
