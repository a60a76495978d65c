"""Turn results into text or JSON for people and scripts. Pure."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import click

from dockwall.backends.base import DEFAULT_HITS, Change, Hits, Sync
from dockwall.cli.app import CheckResult, FlowsResult, PlanResult
from dockwall.compile import flows
from dockwall.compile.compiler import quarantine_warning
from dockwall.compile.explain import Verdict
from dockwall.compile.exposure import ContainerEgress, ContainerExposure, PortExposure
from dockwall.host import proxy_sockets
from dockwall.model.hoststate import Container, HostState, Quarantined
from dockwall.model.packets import Outcome, Route
from dockwall.model.ruleset import Allow, Egress
from dockwall.model.values import Family, IPNetwork, ProxyCgroup


def change_text(change: Change[Any], verbose: bool = False) -> str:
    """Per family: how many kernel rules come and go; with verbose, the rules themselves."""
    if not change.pending:
        return "nothing to do: the installed rules match"
    out = []
    for fam in change.families:
        if not fam.pending:
            out.append(f"{fam.family}: up to date")
            continue
        summary = f"{fam.family}: {len(fam.added)} rule(s) to add, {len(fam.removed)} to remove"
        out.append(summary + (f"; {fam.hook}" if fam.hook else ""))
        if verbose:
            out += [f"  + {line}" for line in fam.added]
            out += [f"  - {line}" for line in fam.removed]
    return "\n".join(out)


def plan_text(result: PlanResult, verbose: bool = False) -> str:
    if not result.change.pending:
        return change_text(result.change)
    if not result.known:
        note = (
            "no record of what dockwall installed (or the kernel was changed since), "
            "so here are the kernel rules that change:"
        )
        return note + "\n" + change_text(result.change, verbose=True)
    lines = [*result.rules, *result.reach] or ["the kernel rules need repair (drift)"]
    return "\n".join([*lines, "", change_text(result.change, verbose)])


def plan_json(result: PlanResult, warnings: tuple[str, ...] = ()) -> str:
    change = result.change
    doc = {
        "pending": change.pending,
        "known": result.known,
        "rules": result.rules,
        "reach": result.reach,
        "families": [
            {
                "family": f.family.value,
                "pending": f.pending,
                "add": list(f.added),
                "remove": list(f.removed),
                "hook": f.hook,
            }
            for f in change.families
        ],
        "warnings": list(warnings),
    }
    return json.dumps(doc, indent=2)


def _port_label(p: PortExposure) -> str:
    host = f"{p.port.host_ip}:" if p.port.host_ip else ""  # else every address it is bound in
    return f"{host}{p.port.host_port}/{p.port.proto}->{p.port.container_port}"


def status_rows(rows: tuple[ContainerExposure, ...], hits: dict[str, Hits]) -> list[list[str]]:
    table = [["CONTAINER", "ADDRESSES", "PUBLISHED", "PATH", "REACHABLE BY"]]
    for row in rows:
        name = printable(row.container.name) + (" (quarantined network)" if row.quarantined else "")
        addresses = ", ".join(str(a) for a in row.addresses) or "-"
        if not row.ports:
            table.append([name, addresses, "-", "-", "(no published ports)"])
        for i, port in enumerate(row.ports):
            reach = "; ".join(_with_hits(a, hits) for a in port.allows)
            reach = reach or click.style("nobody", dim=True)
            if port.public:
                reach = click.style("ANYONE", fg="red", bold=True) + ": " + reach
            first = i == 0
            table.append(
                [
                    name if first else "",
                    addresses if first else "",
                    _port_label(port),
                    _paths_text(port),
                    reach,
                ]
            )
    return table


def _paths_text(port: PortExposure) -> str:
    """'v4 nat, v6 proxy': how each family's clients get there (the same rules decide)."""
    short = {Route.FORWARD: "nat", Route.PROXY: "proxy"}
    return ", ".join(f"v{4 if f is Family.V4 else 6} {short[r]}" for f, r in port.paths) or "-"


SHOWN_DESTINATIONS = 3  # a rule's destinations named in status, at most


def egress_rows(
    rows: tuple[ContainerEgress, ...], host: HostState, hits: dict[str, Hits]
) -> list[list[str]]:
    """What each container may open, where outbound or between is governed."""
    names = {net: c.name for c in host.containers for net in _host_nets(c)}
    table = [["CONTAINER", "MAY CALL OUT TO", "MAY REACH CONTAINERS"]]
    for row in rows:
        out = _egress_cell(row.outbound, hits, _outside)
        between = _egress_cell(row.between, hits, lambda e: _containers(e, names))
        table.append([printable(row.container.name), out, between])
    return table


def _egress_cell(
    rules: tuple[Egress, ...] | None, hits: dict[str, Hits], where: Callable[[Egress], str]
) -> str:
    if rules is None:
        return "anything (not governed)"
    if not rules:
        return "nothing"
    shown = []
    for e in rules:
        ports = "every port" if e.ports is None else ", ".join(str(p) for p in e.ports)
        hit = hits.get(e.rule)
        counted = f" [{hit.packets} pkts, {_size(hit.bytes)}]" if hit else ""
        shown.append(f"{e.rule} ({where(e)} on {ports}){counted}")
    return "; ".join(shown)


def _outside(rule: Egress) -> str:
    via = f" via {rule.via}" if rule.via else ""
    if rule.destinations is None:
        return "anywhere" + via
    return _first(str(d) for d in rule.destinations) + via


def _containers(rule: Egress, names: Mapping[IPNetwork, str]) -> str:
    if rule.destinations is None:
        return "every container"
    found = dict.fromkeys(printable(names.get(d, str(d))) for d in rule.destinations)
    return _first(found) if found else "no container now"


def _first(items: Iterable[str]) -> str:
    listed = list(items)
    more = len(listed) - SHOWN_DESTINATIONS
    return ", ".join(listed[:SHOWN_DESTINATIONS]) + (f" and {more} more" if more > 0 else "")


def _host_nets(container: Container) -> list[IPNetwork]:
    return [
        ipaddress.ip_network(a)
        for ep in container.endpoints
        for a in (ep.ipv4, ep.ipv6)
        if a is not None
    ]


def egress_json(rows: tuple[ContainerEgress, ...]) -> list[dict[str, Any]]:
    def rules(found: tuple[Egress, ...] | None) -> list[dict[str, Any]] | None:
        if found is None:
            return None
        return [
            {
                "name": e.rule,
                "to": None if e.destinations is None else [str(d) for d in e.destinations],
                "ports": None if e.ports is None else [str(p) for p in e.ports],
                "via": e.via,
            }
            for e in found
        ]

    return [
        {"name": r.container.name, "outbound": rules(r.outbound), "between": rules(r.between)}
        for r in rows
    ]


def _with_hits(allow: Allow, hits: dict[str, Hits]) -> str:
    hit = hits.get(allow.rule)
    return allow.who() + (f" [{hit.packets} pkts, {_size(hit.bytes)}]" if hit else "")


def _size(count: int) -> str:
    value, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def table_text(table: list[list[str]]) -> str:
    """Columns padded to their widest cell; only the last column may carry colour."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)] + [0]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def quarantine_lines(host: HostState) -> list[str]:
    """One line per quarantined Docker object: what it is, why, and what dockwall does."""
    return [
        click.style("QUARANTINED ", fg="red", bold=True) + printable(quarantine_warning(q))
        for q in host.quarantined
    ]


def quarantine_json(quarantined: Iterable[Quarantined]) -> list[dict[str, Any]]:
    return [
        {
            "kind": q.kind,
            "name": q.name,
            "reason": q.reason,
            "dropped_addresses": [str(a) for a in q.addresses],
            "dropped_bridge": q.bridge,
        }
        for q in quarantined
    ]


def default_line(hits: dict[str, Hits]) -> str:
    hit = hits.get(DEFAULT_HITS, Hits(0, 0))
    return f"default verdict turned away {hit.packets} packets ({hit.bytes} bytes)"


def status_json(
    header: StatusHeader,
    rows: tuple[ContainerExposure, ...],
    hits: dict[str, Hits],
    egress: tuple[ContainerEgress, ...] = (),
) -> str:
    containers = [
        {
            "name": r.container.name,
            "id": r.container.id,
            "addresses": [str(a) for a in r.addresses],
            "quarantined": r.quarantined,
            "ports": [
                {
                    "host_ip": str(p.port.host_ip) if p.port.host_ip else None,
                    "host_port": p.port.host_port,
                    "container_port": p.port.container_port,
                    "proto": p.port.proto.value,
                    "public": p.public,
                    "paths": {f.value: r.value for f, r in p.paths},
                    "rules": [
                        {
                            "name": a.rule,
                            "from": list(a.source_names),
                            "via": a.via,
                            "packets": hits.get(a.rule, Hits(0, 0)).packets,
                            "bytes": hits.get(a.rule, Hits(0, 0)).bytes,
                        }
                        for a in p.allows
                    ],
                }
                for p in r.ports
            ],
        }
        for r in rows
    ]
    default = hits.get(DEFAULT_HITS, Hits(0, 0))
    doc = {
        **asdict(header),  # the fields, in order; a key given again keeps its first place:
        "quarantined": quarantine_json(header.quarantined),
        "containers": containers,
        "default_dropped_packets": default.packets,
        "default_dropped_bytes": default.bytes,
    }
    if egress:  # (only where outbound or between is governed)
        doc["from_containers"] = egress_json(egress)
    return json.dumps(doc, indent=2)


def printable(text: str) -> str:
    """Names come from whoever runs containers: never let them put control codes on a tty."""
    return "".join(c if c.isprintable() else "?" for c in text)


SHOWN_DIFFERENCES = 5  # where the installed rules differ, named at most this many times


def sync_text(sync: Sync) -> str:
    """Both backends answer `check` from the current policy (dockwall.compile.decide) and say
    whether, and where, the kernel holds something else."""
    if sync.in_sync:
        return "the installed rules match the policy"
    where = ", ".join(printable(d) for d in sync.differs[:SHOWN_DIFFERENCES])
    more = len(sync.differs) - SHOWN_DIFFERENCES
    if more > 0:
        where += f" and {more} more"
    return (
        "the installed rules DIFFER from the current policy (drift, or a policy edited but "
        f"not applied) in {where}: answered from the current policy, not the installed rules"
    )


def check_text(result: CheckResult, source: str, dest: str) -> str:
    sync = sync_text(result.sync)
    if result.not_governed:
        return f"{source} -> {dest}: not governed by dockwall: {result.not_governed}"
    out = [f"{source} -> {dest}, arriving on {result.via} ({sync})"]
    for v in result.verdicts:
        t = v.target
        how = "published" if t.published else "routed straight to the container"
        address = f"[{t.address}]" if t.address.version == 6 else str(t.address)
        at = f"{address}:{t.container_port} ({how})"
        if t.route is Route.PROXY:
            why = f"no Docker NAT for it in IPv{t.address.version}"
            at = f"via docker-proxy at {address}:{t.dialed_port} ({why})"
        name = printable(t.container.name)
        out.append(f"  {t.dialed_port}/{t.proto} -> {name} {at}: {_decision_text(v)}")
    return "\n".join(out)


def _decision_text(v: Verdict) -> str:
    d = v.decision
    if d.outcome is Outcome.ALLOWED:
        where = f" ({v.policy_line})" if v.policy_line else ""
        return f"allowed by rule {d.policy_rule}{where}; {v.docker_next}"
    if d.outcome in (Outcome.DROPPED, Outcome.REJECTED):
        return f"{d.outcome.value} by the default: no rule allows it"
    if d.outcome is Outcome.NOT_INSTALLED:
        return "dockwall is not installed (or not hooked in): Docker's own rules decide"
    return "not governed by dockwall (not from outside to a container)"


def check_json(result: CheckResult, source: str, dest: str) -> str:
    doc = {
        "source": source,
        "dest": dest,
        "via": result.via,
        "installed_matches_policy": result.in_sync,
        "installed_differs": list(result.sync.differs),
        "not_governed": result.not_governed or None,
        "verdicts": [
            {
                "container": v.target.container.name,
                "address": str(v.target.address),
                "proto": v.target.proto.value,
                "dialed_port": v.target.dialed_port,
                "container_port": v.target.container_port,
                "published": v.target.published,
                "path": v.target.route.value,
                "verdict": v.decision.outcome.value,
                "rule": v.decision.policy_rule,
                "policy_line": v.policy_line,
                "kernel_rule": v.decision.rule,
                "docker_next": v.docker_next,
            }
            for v in result.verdicts
        ],
    }
    return json.dumps(doc, indent=2)


def flows_text(result: FlowsResult, source: str, dest: str) -> str:
    """check from a container: one line per connection it would open."""
    out = [f"{printable(source)} -> {printable(dest)} ({sync_text(result.sync)})"]
    for v in result.verdicts:
        f = v.flow
        at = f"[{f.destination}]" if f.destination.version == 6 else str(f.destination)
        to = "" if f.target is None else f" ({printable(f.target.name)})"
        where = f"out {f.out_interface}" if f.target is None else f"to bridge {f.out_interface}"
        out.append(
            f"  {f.port}/{f.proto} {f.direction.value} from {printable(f.source.name)} "
            f"{f.source_address} to {at}{to}, {where}: {flows.text(v)}"
        )
    return "\n".join(out)


def flows_json(result: FlowsResult, source: str, dest: str) -> str:
    doc = {
        "source": source,
        "dest": dest,
        "installed_matches_policy": result.in_sync,
        "installed_differs": list(result.sync.differs),
        "verdicts": [
            {
                "direction": v.flow.direction.value,
                "container": v.flow.source.name,
                "address": str(v.flow.source_address),
                "destination": str(v.flow.destination),
                "destination_container": None if v.flow.target is None else v.flow.target.name,
                "proto": v.flow.proto.value,
                "port": v.flow.port,
                "out_interface": v.flow.out_interface,
                "governed": v.governed,
                "verdict": v.decision.outcome.value,
                "rule": v.decision.policy_rule,
                "policy_line": v.policy_line,
                "kernel_rule": v.decision.rule,
            }
            for v in result.verdicts
        ],
    }
    return json.dumps(doc, indent=2)


@dataclass(frozen=True)
class StatusHeader:
    """What `dockwall status` says above its table, and first in its JSON: these names, in
    this order. The CLI builds it in one place from what it read; this module only formats."""

    policy: str  # the policy file, as given
    policy_sha256: str
    applied_at: float | None  # by dockwall's record of its last apply; None: no record
    applied_policy_sha256: str | None
    installed_matches_policy: bool
    backend: str  # dockwall's: iptables or nftables
    docker_version: str
    quarantined: tuple[Quarantined, ...]
    docker_firewall_backend: str  # Docker's own, as its /info says
    unseen_proxy_ports: str  # unseen_proxy_ports()


def status_header(header: StatusHeader) -> str:
    match = (
        click.style("yes", fg="green")
        if header.installed_matches_policy
        else click.style("NO", fg="red", bold=True) + " (see `dockwall plan`)"
    )
    applied = header.applied_at
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(applied)) if applied else "unknown"
    return (
        f"policy {header.policy} (sha256 {header.policy_sha256[:12]}), "
        f"applied {when}, installed rules match it: {match}, "
        f"backend {header.backend}, Docker {header.docker_version}\n"
        + docker_firewall_line(header)
        + f"\ndocker-proxy's ports of a container dockwall has not seen yet: "
        f"{header.unseen_proxy_ports}"
    )


def unseen_proxy_ports(backend: str, where: ProxyCgroup | None) -> str:
    """What happens, on the proxy path, to a port of a container being started."""
    if backend == "nftables" and where is not None and proxy_sockets.exists(where):
        return f'closed from the first packet (dockerd\'s cgroup "{where.path}")'
    why = (
        "iptables can't match a listening socket's cgroup"
        if backend != "nftables"
        else ("dockerd's cgroup is not known")
    )
    return f"open until dockwall has seen the container, within its reaction time ({why})"


# What dockwall's rules do beside Docker's, by (Docker's firewall backend, dockwall's).
HOOK_NOTES = {
    ("nftables", "nftables"): "no DOCKER-USER; dockwall's table inet dockwall drops "
    "before Docker's filter-FORWARD",
    ("nftables", "iptables"): "no DOCKER-USER: dockwall's iptables rules hook FORWARD, "
    "a base chain of its own beside Docker's, where a drop is final",
    ("iptables", "nftables"): "dockwall's table inet dockwall drops before Docker's FORWARD chains",
    ("iptables", "iptables"): "dockwall's iptables rules hook DOCKER-USER where Docker "
    "made it, else FORWARD",
}


def docker_firewall_line(header: StatusHeader | Mapping[str, str]) -> str:
    """Docker's firewall backend, and how dockwall's rules sit beside it. A mapping with the
    two keys alone is taken too: that is how test_nftables_docker asks for the line."""
    if isinstance(header, StatusHeader):
        driver, ours = header.docker_firewall_backend, header.backend
    else:
        driver, ours = header["docker_firewall_backend"], header["backend"]
    note = HOOK_NOTES.get((driver.split("+", 1)[0], ours))
    return f"Docker's firewall backend: {driver}" + (f" ({note})" if note else "")
