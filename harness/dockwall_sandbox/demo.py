"""The README's demo: a sandboxed Docker host, the example policy, who can reach what.

    python3 -m dockwall_sandbox.demo [--engine 28|20.10|29|29-nftables] [--policy FILE]

Needs root and the engines from scripts/setup.sh. Everything runs in network namespaces made
for the demo and is removed at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cleanup import cleanup_leftovers
from .dockwall_cli import dockwall
from .engines import ENGINES, unavailable_reason
from .matrix import Case, cases, probe, table
from .sandbox import Sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 74 - len(title)))


def show(observed: dict[Case, bool]) -> None:
    print("Through the published ports (dialed at the Docker host's address on each side):")
    print(table(observed, "published"))
    print("\nRouted straight at the container's own address:")
    if any(ok for case, ok in observed.items() if case.path == "direct"):
        print(table(observed, "direct"))
    else:
        print(
            "  nothing gets through, before dockwall or after: this Docker drops traffic\n"
            "  routed straight at a container itself (Docker 28 and later let in only what\n"
            "  came through a published port's DNAT). Docker 20.10 lets it reach a published\n"
            "  container's port, and dockwall governs it there like the published ports:\n"
            "  python3 -m dockwall_sandbox.demo --engine 20.10"
        )


def run_cli(sandbox: Sandbox, *args: str, policy: Path | None = None) -> int:
    done = dockwall(sandbox, *args, policy=policy)
    shown = " ".join(["dockwall", *args, *(["-p", str(policy)] if policy else [])])
    print(f"$ {shown}")
    for text in (done.stdout, done.stderr):
        if text.strip():
            print(text.rstrip())
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description="dockwall demo on a sandboxed Docker host")
    parser.add_argument("--engine", choices=list(ENGINES), default="28")
    parser.add_argument("--policy", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    reason = unavailable_reason(args.engine)
    if reason:
        print(f"cannot run the demo: {reason} (run scripts/setup.sh as root)", file=sys.stderr)
        return 1
    cleanup_leftovers()
    with Sandbox(args.engine) as sandbox:
        section(f"A Docker {sandbox.engine_version()} host in a network namespace")
        print("WAN (eth0): admin-1 198.51.100.10, admin-2 .11, wan-stranger .99 (+ IPv6)")
        print("LAN (eth1): lan-1 203.0.113.5, lan-2 .6, lan-stranger .99 (+ IPv6)")
        scenario = sandbox.start_seed_scenario()
        for info in scenario.containers.values():
            ports = ", ".join(f"{p}" for p in info.host_ports())
            print(f"container {info.name}: {info.ipv4}, {info.ipv6}; published {ports}")
        found = cases(scenario)
        section("Before dockwall: plain Docker")
        show(probe(sandbox, found))
        section(f"The policy ({args.policy})")
        print(args.policy.read_text().rstrip())
        section("Validate, plan, apply")
        run_cli(sandbox, "validate", policy=args.policy)
        if run_cli(sandbox, "apply", policy=args.policy) != 0:
            return 1
        section("After dockwall apply")
        show(probe(sandbox, found))
        section("dockwall status")
        run_cli(sandbox, "status", policy=args.policy)
        section("dockwall check: why is this allowed or not?")
        run_cli(sandbox, "check", "198.51.100.99", "www-nginx", policy=args.policy)
        run_cli(
            sandbox, "check", "203.0.113.99", "203.0.113.1", "--port", "5432", policy=args.policy
        )
        run_cli(sandbox, "check", "2001:db8:100::10", "db", policy=args.policy)
        section("Apply again: nothing to write")
        run_cli(sandbox, "apply", policy=args.policy)
        section("dockwall remove: plain Docker again")
        run_cli(sandbox, "remove")
        after = probe(sandbox, found)
        opened = sum(after[c] for c in found if c.path == "published")
        print(
            f"published-port connections open again: {opened} of "
            f"{sum(c.path == 'published' for c in found)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
