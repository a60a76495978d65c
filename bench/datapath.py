"""Benchmark: what dockwall costs the datapath when the allowlist is large.

    python3 bench/datapath.py [--engine 28] [--seconds 5] [--rounds 3] [--nftables]

In a sandboxed Docker host, one container publishes 8080 (busybox httpd, with a 512 MiB
file). The policy allows 10,000 IPv6 source addresses to it, the test source among the
last. From the WAN namespace, for each way of filtering, in interleaved rounds:
- new connections per second: short HTTP/1.0 connections from 4 threads for --seconds;
- bulk throughput: one connection downloading the 512 MiB file.
Ways: no dockwall; dockwall iptables (+ ipset); the seed's way (one rule per address, a
linear walk); dockwall nftables (with --nftables, once that backend exists). Each is
reported as a ratio of the no-dockwall figure (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from ipaddress import IPv6Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockwall_sandbox import Sandbox, Side, cleanup_leftovers
from dockwall_sandbox.dockwall_cli import _env, dockwall

SOURCE = "2001:db8:100::10"
TARGET = "2001:db8:100::1"
PORT = 8080
LINEAR = (
    "import sys\n"
    "from dockwall.backends.iptables import ipsets\n"
    "ipsets.THRESHOLD = 10**9  # the seed's way: no sets, one rule per address\n"
    "from dockwall.cli import main\n"
    "sys.argv = ['dockwall', 'apply', '-p', sys.argv[1], '--docker-host', sys.argv[2]]\n"
    "main()\n"
)


def policy_text() -> str:
    """10,000 sources: 9,990 synthetic ones (never sent a packet), the test source 10th last."""
    others = [str(IPv6Address("2001:db8:ffff::") + n) for n in range(1, 10_000)]
    members = [*others[:-9], SOURCE, *others[-9:]]
    listed = ", ".join(f'"{m}"' for m in members)
    return (
        "version: 1\ngroups:\n  many: [" + listed + "]\nrules:\n"
        "  - {name: many, from: many, via: eth0, to: {container: web}, ports: [8080]}\n"
    )


def set_way(box: Sandbox, way: str, policy: Path) -> None:
    dockwall(box, "remove")
    if way == "none":
        return
    if way == "seed's way (linear)":
        argv = [sys.executable, "-c", LINEAR, str(policy), box.docker_host]
        done = box.run_in_host(argv, check=False, env=_env(box), timeout=600)
    else:
        extra = ["--backend", "nftables"] if way == "dockwall nftables" else []
        done = dockwall(box, "apply", *extra, policy=policy)
    if done.returncode != 0:
        raise SystemExit(f"{way}: {done.stderr}")


def measure(box: Sandbox, seconds: float) -> tuple[float, float]:
    loadgen = [sys.executable, "-m", "dockwall_sandbox.loadgen"]
    conn = box.run_in_outside(
        Side.WAN,
        [*loadgen, "conn", SOURCE, TARGET, str(PORT), str(seconds), "4"],
        timeout=seconds + 60,
    )
    result = json.loads(conn.stdout)
    if result["connections"] == 0:
        raise SystemExit(f"no connection got through: {result}")
    bulk = box.run_in_outside(
        Side.WAN, [*loadgen, "bulk", SOURCE, TARGET, str(PORT), "/big"], timeout=120
    )
    moved = json.loads(bulk.stdout)
    return result["connections"] / result["seconds"], moved["bytes"] / moved["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="28")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nftables", action="store_true")
    args = parser.parse_args()
    ways = ["none", "dockwall iptables+ipset", "seed's way (linear)"]
    ways += ["dockwall nftables"] if args.nftables else []
    cleanup_leftovers()
    with Sandbox(args.engine) as box, tempfile.TemporaryDirectory() as folder:
        policy = Path(folder) / "policy.yaml"
        policy.write_text(policy_text())
        box.start_container("web", [(PORT, 80)])
        box.docker("exec", "web", "dd", "if=/dev/zero", "of=/www/big", "bs=1M", "count=512")
        results: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way in ways:
                set_way(box, way, policy)
                results[way].append(measure(box, args.seconds))
        dockwall(box, "remove")
    base_conn = statistics.median(r[0] for r in results["none"])
    base_bulk = statistics.median(r[1] for r in results["none"])
    print(
        f"10,000 allowlisted IPv6 sources, test source 10th from last; Docker {args.engine}; "
        f"median of {args.rounds} rounds"
    )
    print(f"{'way':28} {'new conn/s':>10} {'ratio':>6} {'bulk MiB/s':>11} {'ratio':>6}")
    for way, figures in results.items():
        conn = statistics.median(r[0] for r in figures)
        bulk = statistics.median(r[1] for r in figures)
        print(
            f"{way:28} {conn:10.0f} {conn / base_conn:6.3f} {bulk / 2**20:11.0f} "
            f"{bulk / base_bulk:6.3f}"
        )
    print("targets: sets >= 0.95x (new connections) and >= 0.99x (bulk) of no firewall")


if __name__ == "__main__":
    main()
