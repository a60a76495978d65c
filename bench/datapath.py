"""Benchmark: what dockwall costs the datapath when the allowlist is large.

    python3 bench/datapath.py [--engine 28] [--rounds 9] [--seconds 3] [--bulk-seconds 6]
                              [--connections 64] [--quiet 0.03] [--retries 3] [--no-pin]
                              [--nftables] [--outbound]

--outbound measures the other direction: a container calling out under `outbound: drop`,
allowed by one rule to 10,000 IPv6 destinations, the server's address 2001:db8:100::10 10th
from last (the same list). The server runs in the WAN namespace, the clients (wrk and the
bulk client, host binaries) in the container's network namespace (nsenter), so each SYN
crosses the Docker host's FORWARD from the container's bridge. Ways: none, dockwall iptables
(the destinations in an ipset), dockwall nftables (a set); the seed's way has no outbound.

In a sandboxed Docker host, one container publishes 8080 -> 80. The policy allows 10,000
IPv6 sources to it; the test source 2001:db8:100::10 is 10th from last both as listed and in
address order (dockwall sorts sources). Ways: no dockwall; dockwall iptables (+ ipset); the
seed's way (one rule per address: a linear walk of 9,990 rules before the test source's);
dockwall nftables (with --nftables). In interleaved rounds (the order rotates each round),
from the WAN namespace, for each way:
- new connections per second: wrk, one thread, --connections concurrent connections, every
  request with "Connection: close", for --seconds;
- bulk: one TCP connection reading an endless body (zeros sent again and again from one
  cache-sized in-memory file with sendfile, read into a 256 KiB buffer); the first second
  (slow start) is not counted, then --bulk-seconds are (its rate wanders by some 5% from one
  half second to the next even on an idle machine, so it needs the longer window).
The server is bench/datapath_server.c (one process, epoll, sendfile; no fork per connection)
in the container, the bulk client bench/datapath_client.c; both are built at start with
`gcc -O2 -static`. Client and server are pinned to CPU 0 and CPU 1 (--no-pin: not): each
packet's way through the Docker host runs in softirq on the CPU of the process that sent it,
so the SYN's walk through the firewall is paid on the client's CPU, which is the busy one.
Before each figure the Docker host's conntrack table is flushed, so each way starts alike.

The machine may be shared: a figure taken while other processes used more than --quiet of
the machine's CPU time (from /proc/PID/stat: processes other than this one, its
descendants and the server) is taken again, up to --retries times; if even the least
disturbed attempt was above, it is kept but marked "*" and left out of the statistics.

Each figure is the median, with the min-max spread, over the rounds where it was quiet; a
ratio is the median (and min-max) of the per-round ratios to no dockwall in the same round,
over the n rounds where both figures were quiet. Even on an idle machine (a VM) one figure
wanders by several percent from one measurement to the next: compare ratios with their
spread, and raise --rounds to narrow it. "hits" is the count on dockwall's allow rules per
connection made: not 0 shows the traffic went through dockwall's rules (iptables counts 2:
dockwall's chain is jumped from both FORWARD and DOCKER-USER, so each SYN passes it twice).

Needs wrk and gcc with a static libc (Debian: apt-get install -y wrk gcc libc6-dev).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockwall_sandbox import Sandbox, SandboxError, Side, cleanup_leftovers
from dockwall_sandbox._proc import run
from dockwall_sandbox.dockwall_cli import _env, dockwall

HERE = Path(__file__).resolve().parent
SOURCE = "2001:db8:100::10"
TARGET = "2001:db8:100::1"
PORT = 8080  # published
CONTAINER_PORT = 80  # datapath_server, in the container
HTTPD_PORT = 81  # the image's busybox httpd, moved out of the way
ENDLESS = 1 << 50  # bytes of /big: more than any run reads
CLIENT_CPU, SERVER_CPU = 0, 1
WARMUP = 1.0
NONE = "none"
IPSET = "dockwall iptables+ipset"
LINEAR = "seed's way (linear)"
NFT = "dockwall nftables"
LINEAR_APPLY = (
    "import sys\n"
    "from dockwall.backends.iptables import ipsets\n"
    "ipsets.THRESHOLD = 10**9  # the seed's way: no sets, one rule per address\n"
    "from dockwall.cli.commands import main\n"
    "sys.argv = ['dockwall', 'apply', '-p', sys.argv[1], '--docker-host', sys.argv[2]]\n"
    "main()\n"
)
# wrk prints its summary for people; this prints it once more, exactly, as JSON.
WRK_REPORT = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, '
    .. '"timeout": %d}\\n', summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""
_COUNTER = re.compile(r"^\[(\d+):\d+\]")
_NFT_COUNTER = re.compile(r"counter packets (\d+) bytes \d+ accept")


def policy_text() -> str:
    """10,000 sources, the test source 10th from last both as listed and in address order.
    The 9,999 others are synthetic (nothing sends from them), one per /64, so that no two
    are adjacent and nothing can merge them into a few prefixes."""
    below = [f"2001:db8:1:{n:x}::1" for n in range(1, 9_991)]
    above = [f"2001:db8:ffff:{n:x}::1" for n in range(1, 10)]
    members = [*below, SOURCE, *above]
    assert sorted(members, key=IPv6Address).index(SOURCE) == len(members) - 10
    listed = ", ".join(f'"{m}"' for m in members)
    return (
        "version: 1\ngroups:\n  many: [" + listed + "]\nrules:\n"
        "  - {name: many, from: many, via: eth0, to: {container: web}, ports: [8080]}\n"
    )


OUT_CLIENT = "client"  # the container that calls out (--outbound)
OUT_PORT = 8080  # datapath_server in the WAN namespace (--outbound)


def outbound_policy_text() -> str:
    """The same 10,000 addresses as destinations of one outbound rule for the client."""
    below = [f"2001:db8:1:{n:x}::1" for n in range(1, 9_991)]
    above = [f"2001:db8:ffff:{n:x}::1" for n in range(1, 10)]
    members = [*below, SOURCE, *above]
    listed = ", ".join(f'"{m}"' for m in members)
    return (
        "version: 1\ndefaults: {outbound: drop}\ngroups:\n  many: [" + listed + "]\nrules:\n"
        f"  - {{name: many, from: {{container: {OUT_CLIENT}}}, to: many, "
        f"ports: [{OUT_PORT}/tcp]}}\n"
    )


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "gcc") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"missing: {', '.join(missing)}; install with: apt-get install -y wrk gcc libc6-dev"
        )


def build(folder: Path) -> tuple[Path, Path]:
    """The server and the bulk client, static, so that they run in the busybox container."""
    built = []
    for name in ("datapath_server", "datapath_client"):
        binary = folder / name
        argv = ["gcc", "-O2", "-static", "-Wall", "-o", str(binary), str(HERE / f"{name}.c")]
        done = run(argv, timeout=120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"gcc failed on {name}.c (static libc: libc6-dev):\n{done.stderr}")
        built.append(binary)
    return built[0], built[1]


@dataclass
class Series:
    """One figure per round, and whether it was taken on a quiet machine."""

    values: list[float] = field(default_factory=list)
    quiet: list[bool] = field(default_factory=list)

    def add(self, value: float, quiet: bool) -> None:
        self.values.append(value)
        self.quiet.append(quiet)

    def used(self) -> list[float]:
        """The quiet figures; all of them if none was quiet."""
        return [v for v, q in zip(self.values, self.quiet, strict=True) if q] or self.values

    def ratios(self, base: Series) -> tuple[list[float], int]:
        """Per-round ratios to base, of the rounds where both figures are quiet (of all rounds
        if there is none such), and how many rounds that is (0: none was quiet)."""
        pairs = zip(self.values, self.quiet, base.values, base.quiet, strict=True)
        quiet = [a / b for a, qa, b, qb in pairs if qa and qb]
        everything = [a / b for a, b in zip(self.values, base.values, strict=True)]
        return quiet or everything, len(quiet)


@dataclass
class Figures:
    conn: Series = field(default_factory=Series)  # new connections per second
    bulk: Series = field(default_factory=Series)  # bytes per second
    hits: list[float] = field(default_factory=list)  # allow-rule hits per connection


@dataclass
class Bench:
    box: Sandbox
    args: argparse.Namespace
    client: Path
    script: Path
    policy: Path
    results: dict[str, Figures]
    linear_position: str = "?"
    connections_made: int = 0
    client_pid: int = 0  # --outbound: the calling container's process (its netns)
    client_address: str = ""

    @property
    def pin(self) -> bool:
        return not bool(self.args.no_pin)

    def pinned(self, argv: list[str], cpu: int) -> list[str]:
        return ["/usr/bin/taskset", "-c", str(cpu), *argv] if self.pin else argv

    def prepare(self, server: Path) -> None:
        """Container `web` with datapath_server on 80 (published as 8080); the source set."""
        box = self.box
        box.start_container("web", [(PORT, CONTAINER_PORT)], listen=[HTTPD_PORT])
        box.docker("cp", str(server), "web:/bin/datapath_server")
        cpu = [str(SERVER_CPU)] if self.pin else []
        argv = ["/bin/datapath_server", str(CONTAINER_PORT), str(ENDLESS), *cpu]
        box.docker("exec", "-d", "web", *argv)
        # wrk cannot bind a source address: make the WAN host pick the allowlisted one.
        route = ["route", "replace", f"{TARGET}/128", "dev", "eth0", "src", SOURCE]
        box.run_in_outside(Side.WAN, ["/usr/sbin/ip", "-6", *route])
        deadline = time.monotonic() + 15
        while not box.probe(Side.WAN, [(SOURCE, TARGET, PORT)])[0]:
            if time.monotonic() > deadline:
                raise SystemExit("datapath_server in the container does not answer")
            time.sleep(0.2)

    def prepare_outbound(self, server: Path) -> None:
        """Container `client` (its netns entered by pid); datapath_server in WAN on 8080."""
        box = self.box
        info = box.start_container(OUT_CLIENT, [], listen=[HTTPD_PORT])
        if info.ipv6 is None:
            raise SystemExit("the client container has no IPv6 address")
        self.client_address = str(info.ipv6)
        pid = box.docker("inspect", "-f", "{{.State.Pid}}", OUT_CLIENT).stdout.strip()
        self.client_pid = int(pid)
        cpu = [str(SERVER_CPU)] if self.pin else []
        argv = [str(server), str(OUT_PORT), str(ENDLESS), *cpu]
        wan = box.outside_ns(Side.WAN)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", wan, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        box.dirs.record_helper(proc.pid)
        deadline = time.monotonic() + 15
        while run(self.in_client(["true"]), timeout=10, check=False).returncode != 0 or (
            not self.reaches_server()
        ):
            if time.monotonic() > deadline:
                raise SystemExit("datapath_server in WAN does not answer the container")
            time.sleep(0.2)

    def in_client(self, argv: list[str]) -> list[str]:
        """argv in the client container's network namespace."""
        return ["nsenter", "-t", str(self.client_pid), "-n", *argv]

    def reaches_server(self) -> bool:
        argv = self.in_client([str(self.client), self.client_address, SOURCE, str(OUT_PORT),
                               "0", "0.2"])  # fmt: skip
        return run(argv, timeout=30, check=False).returncode == 0

    def set_way(self, way: str) -> None:
        box = self.box
        dockwall(box, "remove")
        if way == NONE:
            return
        if way == LINEAR:
            argv = [sys.executable, "-c", LINEAR_APPLY, str(self.policy), box.docker_host]
            done = box.run_in_host(argv, check=False, env=_env(box), timeout=600)
        else:
            extra = ["--backend", "nftables"] if way == NFT else []
            done = dockwall(box, "apply", *extra, policy=self.policy)
        if done.returncode != 0:
            raise SystemExit(f"{way}: {done.stderr}")

    def flush_conntrack(self) -> None:
        self.box.run_in_host(["/usr/sbin/conntrack", "-F"], check=False, timeout=30)

    def new_connections(self) -> float:
        """New connections per second, each a GET of a tiny body with "Connection: close"."""
        seconds = self.args.seconds
        wrk = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{seconds:g}s"]
        wrk += ["--timeout", "5s", "-H", "Connection: close", "-s", str(self.script)]
        if self.args.outbound:
            wrk += [f"http://[{SOURCE}]:{OUT_PORT}/"]
            argv = self.in_client(self.pinned(wrk, CLIENT_CPU))
            done = run(argv, timeout=seconds + 60)
        else:
            wrk += [f"http://[{TARGET}]:{PORT}/"]
            done = self.box.run_in_outside(
                Side.WAN, self.pinned(wrk, CLIENT_CPU), timeout=seconds + 60
            )
        result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
        errors = {k: v for k, v in result.items() if k not in ("requests", "us") and v}
        if result["requests"] == 0 or errors:
            raise SystemExit(f"wrk: {result}\n{done.stdout}")
        self.connections_made += result["requests"]
        return result["requests"] / (result["us"] / 1e6)

    def bulk(self) -> float:
        """Bytes per second through one connection, after the first second."""
        seconds = self.args.bulk_seconds
        if self.args.outbound:
            argv = [str(self.client), self.client_address, SOURCE, str(OUT_PORT)]
            argv += [f"{WARMUP:g}", f"{seconds:g}", *([str(CLIENT_CPU)] if self.pin else [])]
            done = run(self.in_client(argv), timeout=seconds + WARMUP + 30)
        else:
            argv = [str(self.client), SOURCE, TARGET, str(PORT), f"{WARMUP:g}", f"{seconds:g}"]
            argv += [str(CLIENT_CPU)] if self.pin else []
            done = self.box.run_in_outside(Side.WAN, argv, timeout=seconds + WARMUP + 30)
        moved = json.loads(done.stdout)
        return float(moved["bytes"]) / float(moved["seconds"])

    def quietly(self, measure: Callable[[], float]) -> tuple[float, bool]:
        """measure(), taken again while others used more than --quiet of the machine's CPU;
        the figure of the least disturbed attempt, and whether even that one was noisy."""
        best: tuple[float, float] | None = None  # (others' share, figure)
        for attempt in range(self.args.retries + 1):
            if attempt:
                time.sleep(1.0)
            self.flush_conntrack()
            before = _cpu_sample()
            figure = measure()
            others = _others_share(before, _cpu_sample())
            if best is None or others < best[0]:
                best = (others, figure)
            if others <= self.args.quiet:
                break
        assert best is not None
        return best[1], best[0] > self.args.quiet

    def allow_hits(self, way: str) -> int:
        """Packets counted on dockwall's allow rules (rule `many`) since the way was set."""
        if way == NONE:
            return 0
        if way == NFT:
            listed = self.box.run_in_host(["/usr/sbin/nft", "list", "ruleset"], timeout=60)
            return sum(
                int(m.group(1))
                for line in listed.stdout.splitlines()
                if "dockwall:many" in line and (m := _NFT_COUNTER.search(line))
            )
        saved = self.box.run_in_host(["/usr/sbin/ip6tables-save", "-c"], timeout=60).stdout
        allows = [line for line in saved.splitlines() if "dockwall:many" in line]
        if way == LINEAR:
            mine = [n for n, line in enumerate(allows, 1) if f" -s {SOURCE}/128 " in line]
            self.linear_position = f"{mine[0] if mine else '?'} of {len(allows)}"
        return sum(int(m.group(1)) for line in allows if (m := _COUNTER.match(line)))

    def measure(self, way: str) -> None:
        figures = self.results[way]
        hits_before, made_before = self.allow_hits(way), self.connections_made
        conn, noisy_conn = self.quietly(self.new_connections)
        hits = self.allow_hits(way) - hits_before
        made = self.connections_made - made_before
        moved, noisy_bulk = self.quietly(self.bulk)
        figures.conn.add(conn, not noisy_conn)
        figures.bulk.add(moved, not noisy_bulk)
        # Of every attempt; the SYNs of the few connections in flight when wrk stopped count
        # as hits but not as connections.
        figures.hits.append(hits / made)
        print(
            f"  {way:26} {conn:9.0f} conn/s{'*' if noisy_conn else ' '} "
            f"{moved / 2**20:8.0f} MiB/s{'*' if noisy_bulk else ' '}",
            file=sys.stderr,
            flush=True,
        )

    def warm_up(self) -> None:
        """One discarded measurement, so the first way is not measured on a cold host."""
        self.set_way(NONE)
        self.flush_conntrack()
        self.new_connections()
        self.bulk()


PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Task:
    ppid: int
    comm: str
    kernel: bool  # a kernel thread (ksoftirqd and the like run our softirq work)
    ticks: int  # CPU time of the task and of its children it has waited for


Tasks = dict[int, Task]


def _tasks() -> Tasks:
    """Every process's CPU time so far, from /proc/PID/stat."""
    tasks: Tasks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        kernel = bool(int(fields[6]) & PF_KTHREAD)
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        tasks[int(entry.name)] = Task(int(fields[1]), head.partition("(")[2], kernel, ticks)
    return tasks


def _cpu_sample() -> tuple[Tasks, float]:
    return _tasks(), time.monotonic()


def _others_share(before: tuple[Tasks, float], after: tuple[Tasks, float]) -> float:
    """Share of the machine's CPU time spent between two samples by processes not ours: not
    this process and its descendants (wrk, the clients, the sandbox's dockerd), not the
    server in the container, not kernel threads. Processes that ended were waited for by a
    parent, whose children's time counts."""
    (old, start), (new, end) = before, after
    children: dict[int, list[int]] = {}
    for pid, task in new.items():
        children.setdefault(task.ppid, []).append(pid)
    ours, stack = set(), [os.getpid()]
    while stack:
        pid = stack.pop()
        ours.add(pid)
        stack.extend(children.get(pid, ()))
    ticks = 0
    for pid, task in new.items():
        if pid in ours or task.kernel or task.comm == "datapath_server":
            continue
        was = old.get(pid)
        ticks += task.ticks - (was.ticks if was is not None and was.comm == task.comm else 0)
    seconds = max(ticks, 0) / os.sysconf("SC_CLK_TCK")
    return seconds / ((end - start) * (os.cpu_count() or 1))


def spread(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    low, mid, high = min(values) / scale, statistics.median(values) / scale, max(values) / scale
    return f"{mid:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def report(bench: Bench, took: float) -> None:
    args, results = bench.args, bench.results
    base = results[NONE]
    pinning = "client CPU 0, server CPU 1" if bench.pin else "not pinned"
    what = (
        "outbound: 10,000 allowlisted IPv6 destinations, the server 10th from last"
        if args.outbound
        else "10,000 allowlisted IPv6 sources, test source 10th from last"
    )
    print(
        f"{what}; Docker {args.engine}; "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s (conn), "
        f"{args.bulk_seconds:g} s (bulk); "
        f"wrk -t1 -c{args.connections}; {pinning}"
    )
    print(
        "median [min-max] over the quiet rounds; ratio: median [min-max] of the per-round "
        "ratios to none, over the n rounds where both figures are quiet"
    )
    print(
        f"{'way':24} {'new conn/s':>19} {'ratio':>19} {'n':>2}  {'bulk MiB/s':>16} "
        f"{'ratio':>19} {'n':>2} {'hits':>5}"
    )
    for way, figures in results.items():
        conn_ratio, conn_n = figures.conn.ratios(base.conn)
        bulk_ratio, bulk_n = figures.bulk.ratios(base.bulk)
        print(
            f"{way:24} {spread(figures.conn.used()):>19} {spread(conn_ratio, digits=3):>19} "
            f"{conn_n:2}  {spread(figures.bulk.used(), 2**20):>16} "
            f"{spread(bulk_ratio, digits=3):>19} {bulk_n:2} {statistics.median(figures.hits):5.2f}"
        )
    print("targets: sets >= 0.95x (new connections) and >= 0.99x (bulk) of no firewall")
    if LINEAR in results:
        print(f"seed's way: the test source's rule is number {bench.linear_position} allow rules")
    print(f"took {took:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", default="28")
    parser.add_argument("--seconds", type=float, default=3.0, help="new connections, each")
    parser.add_argument("--bulk-seconds", type=float, default=6.0, help="bulk, each")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quiet", type=float, default=0.03)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--nftables", action="store_true")
    parser.add_argument("--outbound", action="store_true", help="a container calling out")
    args = parser.parse_args()
    check_tools()
    ways = [NONE, IPSET, LINEAR] + ([NFT] if args.nftables else [])
    if args.outbound:
        ways = [NONE, IPSET, NFT]
    cleanup_leftovers()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        server, client = build(folder)
        script = folder / "report.lua"
        script.write_text(WRK_REPORT)
        policy = folder / "policy.yaml"
        policy.write_text(outbound_policy_text() if args.outbound else policy_text())
        with Sandbox(args.engine) as box:
            results = {way: Figures() for way in ways}
            bench = Bench(box, args, client, script, policy, results)
            if args.outbound:
                bench.prepare_outbound(server)
            else:
                bench.prepare(server)
            bench.warm_up()
            for number in range(args.rounds):
                print(f"round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
                turn = number % len(ways)
                for way in ways[turn:] + ways[:turn]:
                    bench.set_way(way)
                    bench.measure(way)
            dockwall(box, "remove")
    report(bench, time.monotonic() - start)


if __name__ == "__main__":
    try:
        main()
    except SandboxError as exc:
        raise SystemExit(f"sandbox: {exc}") from exc
