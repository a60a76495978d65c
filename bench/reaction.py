"""Benchmark: how fast `dockwall run` lets a new container in (and takes a dead one out).

    python3 bench/reaction.py [--engine 28|20.10] [--count 200] [--idle 30]

Needs root and the engines from scripts/setup.sh. In a sandboxed Docker host, starts
--count containers one after another, each selected by a policy rule, and takes for each
the time from Docker's `start` event (its own timestamp) until the kernel rules allow the
container: the daemon logs that age once its iptables-restore has returned. The same for
`die` (the address must leave the rules as promptly). Three ways, in one run:

- dockwall run (acts at once on each burst of events)
- dockwall run --debounce 0.5 (the 500 ms debounce documented by dfw, the best-known peer)
- a full `dockwall apply` process per event (what a "re-run the script" hook does)

Then the idle cost of the daemon: CPU seconds used and resident memory over --idle seconds.

    python3 bench/reaction.py --big 1000 [--networks 50] [--rules 200] [--addresses 10000]

The big-host comparison instead (issue 12): a policy of --rules rules from --addresses
distinct addresses (each rule selects the containers of one label), the same --count starts
and dies measured with each --backends backend, first on the empty host, then once --big
busybox sleepers on --networks user-defined networks run beside them. Each event's time is
shown per stage, as the daemon logs it: queued (Docker's timestamp until dockwall begins:
the event's way to dockwall, its decoding, and a reconcile or drift check before it),
snapshot, compile, explain (the log line's words), plan (render, read, diff), apply (the
write), the whole (event -> rules in the kernel), and then the apply record (written after
the kernel has the rules, before the next event is looked at). Then each backend's idle RSS
on the empty and on the big host. A stage an event's reconcile did not reach counts as 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import docker

from dockwall_sandbox import Sandbox, cleanup_leftovers
from dockwall_sandbox.dockwall_cli import RunningDaemon, dockwall
from dockwall_sandbox.image import IMAGE

POLICY = """version: 1
rules:
  - name: admins
    from: [198.51.100.10]
  - name: bench
    from: any
    to: {label: "bench=yes"}
    ports: [9000/tcp]
"""
HANDLED = re.compile(
    r'msg="event handled" what="container (bench-\d+) (start|die)" age_ms=([\d.]+)(.*)'
)
FIELD = re.compile(r"(\w+)_ms=([\d.]+)")
STAGES = ("queued", "snapshot", "compile", "explain", "plan", "apply", "age", "record")


def pick(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"n={len(values):3d}  p50 {pick(values, 0.5):7.1f}  p95 {pick(values, 0.95):7.1f}  "
        f"p99 {pick(values, 0.99):7.1f}  max {max(values):7.1f}  ms"
    )


def start_and_stop(box: Sandbox, n: int) -> None:
    name = f"bench-{n}"
    box.docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "bench=yes",
        "-p",
        "9000:80",
        IMAGE,
        "/bin/serve",
        "80",
    )
    return None


def daemon_mode(
    box: Sandbox, policy: Path, count: int, tmp: Path, *extra: str, log: Path | None = None
) -> tuple[list[float], list[float]]:
    log = log or tmp / f"daemon{'-'.join(extra)}.log"
    daemon = RunningDaemon(box, policy, log, *extra)
    try:
        if not daemon.wait_for("msg=running", timeout=120):
            raise SystemExit(daemon.log())
        settle = 0.2 + (float(extra[1]) if extra[:1] == ("--debounce",) else 0.0)
        for n in range(count):
            mark = len(daemon.log())
            start_and_stop(box, n)
            daemon.wait_for(f'container bench-{n} start"', timeout=20, after=mark)
            box.docker("rm", "-f", f"bench-{n}")
            daemon.wait_for(f'container bench-{n} die"', timeout=20, after=mark)
            # Let the removal's last events (destroy) be handled, or a debounce they start
            # would already be running down when the next container starts.
            time.sleep(settle)
    finally:
        daemon.stop()
    starts, dies = [], []
    for _name, action, age, _rest in HANDLED.findall(daemon.log()):
        (starts if action == "start" else dies).append(float(age))
    return starts, dies


def stages_of(log: str) -> dict[str, dict[str, list[float]]]:
    """For start and die: each stage's times (ms) over the events, from the daemon's log.
    A stage an event's reconcile did not reach (nothing to write) counts as 0 there."""
    found: dict[str, dict[str, list[float]]] = {
        a: {s: [] for s in STAGES} for a in ("start", "die")
    }
    for _name, action, age, rest in HANDLED.findall(log):
        times = {k: float(v) for k, v in FIELD.findall(rest)} | {"age": float(age)}
        for stage in STAGES:
            found[action][stage].append(times.get(stage, 0.0))
    return found


def big_policy(rules: int, addresses: int) -> str:
    """rules rules, each from its share of `addresses` distinct documentation addresses
    (both IPv4 ranges first, then 2001:db8::/32), to the containers labelled app=app<r>."""
    four = [
        str(a) for net in ("198.51.100.0/24", "203.0.113.0/24") for a in ipaddress.ip_network(net)
    ]
    six = [str(ipaddress.ip_address("2001:db8:1000::") + n) for n in range(addresses - len(four))]
    pool = (four + six)[:addresses]
    random.Random(12).shuffle(pool)
    per = max(1, len(pool) // rules)
    lines = [POLICY.rstrip()]
    for r in range(rules):
        share = pool[r * per : (r + 1) * per]
        lines += [
            f"  - name: app{r}",
            f"    from: [{', '.join(repr(a) for a in share)}]",
            f'    to: {{label: "app=app{r}"}}',
            "    ports: [8080/tcp]",
        ]
    return "\n".join(lines) + "\n"


def fill(box: Sandbox, count: int, networks: int, rules: int) -> float:
    """count sleepers on `networks` IPv4 networks (Docker's default: no IPv6 on its
    networks), labelled app=app<i mod rules>; the seconds it took."""
    began = time.monotonic()
    for k in range(networks):
        box.docker("network", "create", "--subnet", f"10.77.{k}.0/24", f"big-net-{k}")
    client = docker.DockerClient(base_url=box.docker_host, timeout=120)

    def one(i: int) -> None:
        client.containers.run(
            IMAGE,
            ["sleep", "1000000"],
            detach=True,
            name=f"big-{i}",
            network=f"big-net-{i % networks}",
            labels={"app": f"app{i % rules}"},
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))
    client.close()
    return time.monotonic() - began


def empty(box: Sandbox, count: int) -> None:
    """Remove the sleepers (before the sandbox goes: its own clean-up allows 60 s)."""
    client = docker.DockerClient(base_url=box.docker_host, timeout=120)

    def one(i: int) -> None:
        client.api.remove_container(f"big-{i}", force=True)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))
    client.close()


def stage_table(title: str, found: dict[str, dict[str, list[float]]]) -> None:
    for action in ("start", "die"):
        print(f"  {title} {action}:")
        for stage in STAGES:
            label = {"age": "whole (event -> kernel)", "record": "then the apply record"}.get(
                stage, stage
            )
            print(f"    {label:24s} {percentiles(found[action][stage])}")


def big_host(box: Sandbox, args: argparse.Namespace, tmp: Path) -> None:
    policy = tmp / "policy.yaml"
    policy.write_text(big_policy(args.rules, args.addresses))
    backends = args.backends.split(",")
    results: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    rss: dict[tuple[str, str], str] = {}
    print(
        f"Docker {box.engine_version()}; policy: {args.rules + 2} rules, "
        f"{args.addresses} addresses; {args.count} starts and dies per row"
    )
    for host in ("empty", "big"):
        if host == "big":
            took = fill(box, args.big, args.networks, args.rules)
            print(
                f"started {args.big} containers on {args.networks} networks in {took:.0f} s",
                flush=True,
            )
        for backend in backends:
            extra = ("--backend", backend)
            log_path = tmp / f"daemon-{host}-{backend}.log"
            daemon_mode(box, policy, args.count, tmp, *extra, log=log_path)
            results[(host, backend)] = stages_of(log_path.read_text(errors="replace"))
            rss[(host, backend)] = idle_cost(box, policy, args.idle, tmp, *extra)
            dockwall(box, "remove")
            what = f"{args.big} containers" if host == "big" else "empty host"
            stage_table(f"{backend}, {what},", results[(host, backend)])  # (as it goes)
            print(f"  {rss[(host, backend)]}", flush=True)
    print(
        "\nall rows again, per stage, ms (queued: from Docker's event time until dockwall begins):"
    )
    for backend in backends:
        for host in ("empty", "big"):
            what = f"{args.big} containers" if host == "big" else "empty host"
            stage_table(f"{backend}, {what},", results[(host, backend)])
    print("whole, big host / empty host (p50, p99):")
    for backend in backends:
        for action in ("start", "die"):
            ratios = []
            for q in (0.5, 0.99):
                big = pick(results[("big", backend)][action]["age"], q)
                small = pick(results[("empty", backend)][action]["age"], q)
                ratios.append(f"{big / small:.2f}x" if small else "-")
            print(f"  {backend:9s} {action:5s}  {ratios[0]}  {ratios[1]}")
    print(
        "targets (nftables): p50 <= 10 ms, p99 <= 25 ms; iptables p99 <= 30 ms; big/empty <= 1.2x"
    )
    for (host, backend), text in rss.items():
        print(f"  {backend:9s} {host:5s} {text}")
    print("targets: idle RSS <= 60 MB on the big host, <= 40 MB on an empty one")
    empty(box, args.big)


def apply_per_event_mode(box: Sandbox, policy: Path, count: int) -> list[float]:
    """A full `dockwall apply` started by each container start event."""
    client = docker.DockerClient(base_url=box.docker_host, timeout=30)
    events = client.api.events(decode=True, filters={"type": ["container"], "event": ["start"]})
    ages: list[float] = []
    done = threading.Event()

    def follow() -> None:
        for event in events:
            dockwall(box, "apply", policy=policy)
            ages.append((time.time() - int(event["timeNano"]) / 1e9) * 1000)
            if len(ages) >= count:
                done.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    for n in range(count):
        seen = len(ages)
        start_and_stop(box, n)
        deadline = time.monotonic() + 30
        while len(ages) == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        box.docker("rm", "-f", f"bench-{n}")
    done.wait(30)
    events.close()
    client.close()
    return ages


def idle_cost(box: Sandbox, policy: Path, seconds: float, tmp: Path, *extra: str) -> str:
    log = tmp / f"idle{'-'.join(extra)}-{time.monotonic_ns()}.log"
    daemon = RunningDaemon(box, policy, log, "--log-level", "info", *extra)
    try:
        if not daemon.wait_for("msg=running", timeout=120):
            raise SystemExit(daemon.log())
        time.sleep(2)
        pid = daemon.proc.pid
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before, start = cpu(), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu() - before, time.monotonic() - start
        status = Path(f"/proc/{pid}/status").read_text()
        rss = re.search(r"VmRSS:\s+(\d+) kB", status)
        rss_mb = int(rss[1]) / 1024 if rss else float("nan")
    finally:
        daemon.stop()
    return (
        f"idle over {wall:.0f} s (drift check every 1 s): CPU {used:.2f} s "
        f"= {100 * used / wall:.2f}% of one core; RSS {rss_mb:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="28")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--ways", default="run,debounce,apply", help="which ways to measure")
    parser.add_argument("--big", type=int, default=0, help="the big-host comparison's size")
    parser.add_argument("--networks", type=int, default=50)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--addresses", type=int, default=10000)
    parser.add_argument("--backends", default="iptables,nftables")
    args = parser.parse_args()
    ways = set(args.ways.split(","))
    cleanup_leftovers()
    with Sandbox(args.engine) as box, tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.big:
            big_host(box, args, tmp)
            return
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        print(f"Docker {box.engine_version()}, {args.count} container starts per way")
        starts, dies, slow_starts, per_event = [], [], [], []
        if "run" in ways:
            starts, dies = daemon_mode(box, policy, args.count, tmp)
            dockwall(box, "remove")
        if "debounce" in ways:
            slow_starts, _ = daemon_mode(box, policy, args.count, tmp, "--debounce", "0.5")
            dockwall(box, "remove")
        if "apply" in ways:
            per_event = apply_per_event_mode(box, policy, args.count)
            dockwall(box, "remove")
        print("event -> kernel rules allow the container (start):")
        print(f"  dockwall run                 {percentiles(starts)}")
        print(f"  dockwall run --debounce 0.5  {percentiles(slow_starts)}   (dfw's way)")
        print(f"  dockwall apply per event     {percentiles(per_event)}")
        print("event -> the container's address is out of the rules (die):")
        print(f"  dockwall run                 {percentiles(dies)}")
        print("targets: p50 <= 50 ms, p99 <= 200 ms")
        print(idle_cost(box, policy, args.idle, tmp))


if __name__ == "__main__":
    main()
