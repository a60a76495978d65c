"""Benchmark: compile, render and apply a large policy; compare with one iptables call per rule.

    python3 bench/bench_core.py [--seed-way-rules N]

Synthetic host: 1000 containers on 50 bridge networks (IPv4 and IPv6). Policy: 200 rules,
100 groups totalling 10,000 addresses (one in ten IPv6), 5 containers and 2 ports per rule.
Compile and render run in this process. Apply runs as root in a network namespace of its own
(created and deleted here) with DOCKER-USER chains like Docker's: one iptables-restore per
family, then a re-apply that must write nothing, then the seed script's way (one `iptables`
process per rule) for the first N rules, timed and extrapolated to all of them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockwall import proc
from dockwall.backends.base import Kernel
from dockwall.backends.iptables import ipsets, render
from dockwall.backends.iptables.backend import IptablesBackend
from dockwall.backends.nftables import NftablesBackend
from dockwall.compile.compiler import compile_policy
from dockwall.compile.incremental import recompile
from dockwall.model.hoststate import Container, Endpoint, HostState, Network, PublishedPort
from dockwall.model.policy import parse_policy
from dockwall.model.values import Family, Proto

CONTAINERS, NETWORKS, RULES, GROUPS, ADDRESSES = 1000, 50, 200, 100, 10_000
NS = f"dwbench-{os.getpid()}"


def synthetic_host() -> HostState:
    networks = tuple(
        Network(f"{n:012x}", f"net{n}", "bridge", f"br-{n:012x}") for n in range(NETWORKS)
    )
    v4 = ipaddress.ip_network("10.0.0.0/8").hosts()  # synthetic, never sent a packet
    containers = []
    for i in range(CONTAINERS):
        net = networks[i % NETWORKS].name
        endpoint = Endpoint(net, next(v4), ipaddress.ip_address(f"fd00:d0c::{i + 1:x}"))
        ports = (PublishedPort(None, 20000 + i, 80, Proto.TCP),)
        labels = {"app": f"app{i % RULES}"}
        containers.append(Container(f"{i:064x}", f"c{i}", labels, (endpoint,), ports))
    return HostState(tuple(containers), networks, frozenset({"eth0", "eth1"}), "bench")


def synthetic_policy() -> bytes:
    per_group = ADDRESSES // GROUPS
    lines = ["version: 1", "default: drop", "groups:"]
    for g in range(GROUPS):
        members = []
        for a in range(per_group):
            n = g * per_group + a
            if a % 10 == 9:
                members.append(f'"2001:db8:{g:x}::{a:x}"')
            else:
                members.append(str(ipaddress.ip_address("100.64.0.0") + n))
        lines.append(f"  g{g}: [{', '.join(members)}]")
    lines.append("rules:")
    for r in range(RULES):
        lines += [
            f"  - name: rule{r}",
            f"    from: g{r % GROUPS}",
            f"    via: eth{r % 2}",
            f'    to: {{label: "app=app{r}"}}',
            f"    ports: [{80 + r}/tcp, {10000 + r}/tcp]",
        ]
    return ("\n".join(lines) + "\n").encode()


def timed(func, repeat: int = 5):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def pure_phase() -> tuple[object, int]:
    raw, host = synthetic_policy(), synthetic_host()
    t_load, policy = timed(lambda: parse_policy(raw, "bench.yaml"))
    t_compile, compiled = timed(lambda: compile_policy(policy, host))
    ruleset = compiled.ruleset
    t_render, chains = timed(lambda: {f: render.render(f, ruleset.in_family(f)) for f in Family})
    count = sum(len(specs) for per in chains.values() for specs in per.values())
    print(
        f"policy: {RULES} rules, {GROUPS} groups, {ADDRESSES} addresses; "
        f"host: {CONTAINERS} containers on {NETWORKS} networks"
    )
    print(f"rendered iptables rules (both families): {count}")
    print(f"load+validate policy: {t_load * 1000:8.1f} ms")
    print(f"compile:              {t_compile * 1000:8.1f} ms")
    print(f"render (v4+v6):       {t_render * 1000:8.1f} ms")
    print(f"compile + render:     {(t_compile + t_render) * 1000:8.1f} ms   (target < 1000 ms)")
    one_change(policy, host, compiled)
    return ruleset, count


def one_change(policy: Any, host: HostState, compiled: Any) -> None:
    """One container at a new address (a restart): a full compile against recompile, which
    compiles again only the rules that container concerns (compile/incremental.py)."""
    container = host.containers[len(host.containers) // 2]
    ep = container.endpoints[0]
    assert ep.ipv4 is not None
    endpoints = (replace(ep, ipv4=ep.ipv4 + 100_000), *container.endpoints[1:])
    moved = replace(container, endpoints=endpoints)
    after = replace(host, containers=tuple(moved if c is container else c for c in host.containers))
    t_full, full = timed(lambda: compile_policy(policy, after))
    t_inc, inc = timed(lambda: recompile(policy, host, compiled, after))
    assert inc.ruleset == full.ruleset
    print(
        f"one container restarted: full compile {t_full * 1000:.1f} ms, "
        f"recompile {t_inc * 1000:.1f} ms ({t_full / t_inc:.0f}x)"
    )


def run(argv: list[str], stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, timeout=600, capture_output=True)


def counting_runs() -> Counter[str]:
    """Count the processes dockwall starts, by program name."""
    calls: Counter[str] = Counter()
    run_one, run_all = proc.run, proc.run_all

    def counted(argv, stdin=None, timeout=proc.DEFAULT_TIMEOUT):  # type: ignore[no-untyped-def]
        calls[Path(argv[0]).name] += 1
        return run_one(argv, stdin, timeout)

    def counted_all(jobs, timeout=proc.DEFAULT_TIMEOUT):  # type: ignore[no-untyped-def]
        for argv, _ in jobs:
            calls[Path(argv[0]).name] += 1
        return run_all(jobs, timeout)

    proc.run = counted  # type: ignore[assignment]
    proc.run_all = counted_all  # type: ignore[assignment]
    return calls


def inner(seed_way_rules: int) -> None:
    """Runs inside the benchmark's own network namespace."""
    for tool in ("iptables", "ip6tables"):
        run([tool, "-N", "DOCKER-USER"])
        run([tool, "-A", "DOCKER-USER", "-j", "RETURN"])
        run([tool, "-I", "FORWARD", "-j", "DOCKER-USER"])
    ruleset, count = pure_phase()
    backend = Kernel(IptablesBackend())
    calls = counting_runs()
    start = time.perf_counter()
    change = backend.plan(ruleset)  # type: ignore[arg-type]
    backend.apply(change)
    t_apply = time.perf_counter() - start
    restores = calls["iptables-restore"] + calls["ip6tables-restore"]
    print(
        f"apply (plan + restore):   {t_apply * 1000:8.1f} ms, "
        f"restore calls: v4 {calls['iptables-restore']}, v6 {calls['ip6tables-restore']}, "
        f"ipset restore {calls['ipset']} (sets for groups above {ipsets.THRESHOLD} addresses)"
    )
    calls.clear()
    start = time.perf_counter()
    again = backend.plan(ruleset)  # type: ignore[arg-type]
    backend.apply(again)
    t_again = time.perf_counter() - start
    restores = calls["iptables-restore"] + calls["ip6tables-restore"]
    print(
        f"re-apply, nothing changed: {t_again * 1000:7.1f} ms, pending={again.pending}, "
        f"kernel writes (restore calls): {restores}"
    )
    update_cost(backend)
    backend.apply(backend.plan_remove())
    seed_way(ruleset, count, seed_way_rules)


def one_more(host: HostState) -> HostState:
    """host with one more container, selected by rule0 (label app=app0)."""
    extra = Container(
        "f" * 64,
        "newcomer",
        {"app": "app0"},
        (
            Endpoint(
                "net0", ipaddress.ip_address("10.255.0.1"), ipaddress.ip_address("fd00:d0c::ffff")
            ),
        ),
        (PublishedPort(None, 30000, 80, Proto.TCP),),
    )
    return HostState((*host.containers, extra), host.networks, host.interfaces, "bench")


def time_adding_one(  # type: ignore[no-untyped-def]
    backend: Kernel[Any, Any, Any], policy, host: HostState, fresh: bool
) -> float:
    """Median time of plan + apply for one container coming (and going, untimed). fresh:
    read the kernel first (`dockwall apply`); else trust the last apply (`dockwall run`)."""
    without = compile_policy(policy, host).ruleset
    with_one = compile_policy(policy, one_more(host)).ruleset
    backend.apply(backend.plan(without))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        backend.apply(backend.plan(with_one, fresh=fresh))
        times.append(time.perf_counter() - start)
        backend.apply(backend.plan(without, fresh=fresh))
    return statistics.median(times)


def update_cost(first: Kernel[Any, Any, Any]) -> None:
    for backend in (first, Kernel(NftablesBackend())):
        update_cost_with(backend)


def update_cost_with(backend: Kernel[Any, Any, Any]) -> None:
    policy = parse_policy(synthetic_policy(), "bench.yaml")
    small_policy = parse_policy(
        b"version: 1\nrules:\n  - {name: rule0, from: any, to: {label: app=app0}}\n", "s.yaml"
    )
    empty = HostState((), synthetic_host().networks[:1], frozenset({"eth0"}), "bench")
    # Like for like: a host with one container that rule0 selects, so the newcomer joins its
    # class there too (on the empty host it is the first of its class: rules are written).
    one = HostState(synthetic_host().containers[:1], empty.networks, empty.interfaces, "bench")
    for fresh, how in (
        (False, "dockwall run (trusts its last apply)"),
        (True, "dockwall apply (reads the kernel first)"),
    ):
        big = time_adding_one(backend, policy, synthetic_host(), fresh)
        backend.apply(backend.plan_remove())
        small = time_adding_one(backend, small_policy, empty, fresh)
        backend.apply(backend.plan_remove())
        single = time_adding_one(backend, small_policy, one, fresh)
        backend.apply(backend.plan_remove())
        print(
            f"{backend.name}: adding one container, {how}: {big * 1000:.1f} ms with "
            f"{CONTAINERS} containers and {ADDRESSES} addresses managed; "
            f"{small * 1000:.1f} ms on an empty host: {big / small:.2f}x (target <= 1.2x); "
            f"{single * 1000:.1f} ms on a host with one container of its class: "
            f"{big / single:.2f}x"
        )


def without_sets(spec: str, sets: ipsets.Sets) -> list[str]:
    """A class set's dispatch as one rule per container address, as the seed script writes."""
    words = spec.split()
    if "--match-set" not in words or words[words.index("--match-set") + 2] != "dst":
        return [spec]
    members = sets[words[words.index("--match-set") + 1]]
    target = " ".join(words[words.index("dst") + 1 :])
    return [f"-d {net} {target}" for net in sorted(members, key=str)]


def seed_way(ruleset, count: int, limit: int) -> None:  # type: ignore[no-untyped-def]
    """The seed script's way: one iptables process per rule, one rule per address."""
    ipsets.THRESHOLD = 10**9  # the seed's script knows no sets
    lines = []
    for family, tool in ((Family.V4, "iptables"), (Family.V6, "ip6tables")):
        chains = render.render(family, ruleset.in_family(family))
        classes = ipsets.wanted(family, ruleset.in_family(family))
        for chain in chains:
            run([tool, "-N", chain])
        for chain, specs in chains.items():
            for spec in specs:
                lines += [(tool, chain, one) for one in without_sets(spec, classes)]
    count = len(lines)
    sample = lines[:limit]
    if not sample:
        return
    start = time.perf_counter()
    for tool, chain, spec in sample:
        subprocess.run(
            [tool, "-A", chain, *spec.replace('"', "").split()],
            check=True,
            timeout=60,
            capture_output=True,
        )
    elapsed = time.perf_counter() - start
    per = elapsed / len(sample)
    print(
        f"seed way (one iptables call per rule): {len(sample)} of {count} rules took "
        f"{elapsed:.1f} s ({per * 1000:.1f} ms/rule); all {count} extrapolated: "
        f">= {per * count:.0f} s (each call re-reads a growing table, so it only gets slower)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-way-rules", type=int, default=2000)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.seed_way_rules)
        return
    if os.geteuid() != 0:
        pure_phase()
        print("(not root: apply figures need a network namespace; run as root for them)")
        return
    run(["ip", "netns", "add", NS])
    try:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                NS,
                sys.executable,
                __file__,
                "--inner",
                "--seed-way-rules",
                str(args.seed_way_rules),
            ],
            check=True,
            timeout=1800,
        )
    finally:
        run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    main()
