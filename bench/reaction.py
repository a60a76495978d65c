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
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
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
    r'msg="event handled" what="container (bench-\d+) (start|die)" age_ms=([\d.]+)'
)


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return (
        f"n={len(ordered):3d}  p50 {pick(0.5):7.1f}  p95 {pick(0.95):7.1f}  "
        f"p99 {pick(0.99):7.1f}  max {ordered[-1]:7.1f}  ms"
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
    box: Sandbox, policy: Path, count: int, tmp: Path, *extra: str
) -> tuple[list[float], list[float]]:
    log = tmp / f"daemon{'-'.join(extra)}.log"
    daemon = RunningDaemon(box, policy, log, *extra)
    try:
        if not daemon.wait_for("msg=running"):
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
    for _name, action, age in HANDLED.findall(daemon.log()):
        (starts if action == "start" else dies).append(float(age))
    return starts, dies


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


def idle_cost(box: Sandbox, policy: Path, seconds: float, tmp: Path) -> str:
    daemon = RunningDaemon(box, policy, tmp / "idle.log", "--log-level", "info")
    try:
        if not daemon.wait_for("msg=running"):
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
    args = parser.parse_args()
    ways = set(args.ways.split(","))
    cleanup_leftovers()
    with Sandbox(args.engine) as box, tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
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
