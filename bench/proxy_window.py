"""How long a container that starts later is open on docker-proxy's path, under dockwall run.

Docker's default config (no IPv6 on its networks), the example policy (no rule names the
late container), `dockwall run` with each backend. A stranger on the WAN side dials the
host's IPv6 address (docker-proxy's path, INPUT) and its IPv4 address (Docker's NAT, FORWARD)
at the late container's published port over and over, several connections at a time, while
the container is started and removed ROUNDS times. Any HTTP answer is a leak; per round the
window is from the first leaking attempt's start to the last one's end.

    .venv/bin/python bench/proxy_window.py [--engine 28] [--rounds 10]   (root)
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dockwall_sandbox import Sandbox
from dockwall_sandbox import topology as topo
from dockwall_sandbox.dockwall_cli import RunningDaemon
from dockwall_sandbox.image import IMAGE
from dockwall_sandbox.netns import enter_argv
from dockwall_sandbox.pythonpath import child_env

ROOT = Path(__file__).resolve().parents[1]
PORT = 9090
THREADS = 4  # connections at a time per family


def prober(box: Sandbox, out: Path) -> subprocess.Popen[bytes]:
    targets = [
        {"id": f"v{fam}-{n}", "src": str(src), "dst": str(dst), "port": PORT}
        for fam, src, dst in (
            (6, topo.WAN_STRANGER_6, topo.WAN_LINK.host6),
            (4, topo.WAN_STRANGER_4, topo.WAN_LINK.host4),
        )
        for n in range(THREADS)
    ]
    (out / "targets.json").write_text(json.dumps(targets))
    env = child_env()
    argv = [sys.executable, "-m", "dockwall_sandbox.streamprobe", "--targets"]
    argv += [str(out / "targets.json"), "--timeout", "0.1", "--period", "0.002"]
    with (out / "probes.jsonl").open("wb") as stdout:
        return subprocess.Popen(
            enter_argv(box.outside_ns("wan"), argv), stdout=stdout, env=env,
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def rounds(box: Sandbox, count: int) -> list[tuple[float, float]]:
    spans = []
    for n in range(count):
        start = time.time()
        box.docker("run", "-d", "--name", "late", "-p", f"{PORT}:80", IMAGE, "/bin/serve", "80")
        time.sleep(1.5)
        box.docker("rm", "-f", "late")
        time.sleep(0.5)
        spans.append((start, time.time()))
        print(f"  round {n + 1}/{count}", file=sys.stderr)
    return spans


def leaks(out: Path, spans: list[tuple[float, float]]) -> dict[str, list[float]]:
    attempts = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    windows: dict[str, list[float]] = {"v6": [], "v4": []}
    for start, end in spans:
        for family, found in windows.items():
            hits = [
                a for a in attempts
                if a["http"] and a["id"].startswith(family) and start <= a["t"] <= end
            ]  # fmt: skip
            found.append(max(a["t"] + a["d"] for a in hits) - hits[0]["t"] if hits else 0.0)
    return windows


def measure(engine: str, backend: str, count: int) -> dict[str, list[float]]:
    out = Path(tempfile.mkdtemp(prefix="dockwall-proxy-window-"))
    policy = out / "policy.yaml"
    shutil.copy(ROOT / "examples" / "policy.yaml", policy)
    with Sandbox(engine, ipv6=False) as box:
        box.start_seed_scenario()
        daemon = RunningDaemon(box, policy, out / "run.log", "--backend", backend)
        probe = None
        try:
            if not daemon.wait_for("msg=running", timeout=60):
                raise SystemExit(daemon.log())
            probe = prober(box, out)
            time.sleep(1.0)
            spans = rounds(box, count)
        finally:
            if probe is not None:
                probe.send_signal(signal.SIGTERM)
                probe.wait(10)
            daemon.stop()
    return leaks(out, spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="28")
    parser.add_argument("--rounds", type=int, default=10)
    opts = parser.parse_args()
    print(f"late container, {opts.rounds} starts, Docker {opts.engine}, default config")
    print("backend    path                    rounds leaking  worst window  median window")
    for backend in ("iptables", "nftables"):
        found = measure(opts.engine, backend, opts.rounds)
        for family, path in (("v6", "IPv6, docker-proxy"), ("v4", "IPv4, NAT (forward)")):
            spans = sorted(found[family])
            leaking = sum(1 for s in spans if s > 0)
            median = spans[len(spans) // 2]
            print(
                f"{backend:<10} {path:<23} {leaking:>3}/{len(spans):<10} "
                f"{max(spans) * 1000:>8.1f} ms  {median * 1000:>9.1f} ms"
            )


if __name__ == "__main__":
    main()
