"""Turn results into text or JSON for people and scripts. Pure."""

from __future__ import annotations

import json
from typing import Any

from dockwall.backends.base import DEFAULT_HITS, Change, Hits
from dockwall.exposure import ContainerExposure, PortExposure
from dockwall.ruleset import Allow


def plan_text(change: Change, verbose: bool = True) -> str:
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


def plan_json(change: Change, warnings: tuple[str, ...] = ()) -> str:
    doc = {
        "pending": change.pending,
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


def who(allow: Allow) -> str:
    sources = "anyone" if allow.sources is None else ",".join(allow.source_names)
    via = f" via {allow.via}" if allow.via else ""
    return f"{allow.rule} ({sources}{via})"


def _port_label(p: PortExposure) -> str:
    host = f"{p.port.host_ip}:" if p.port.host_ip else ""
    return f"{host}{p.port.host_port}/{p.port.proto}->{p.port.container_port}"


def status_rows(rows: tuple[ContainerExposure, ...], hits: dict[str, Hits]) -> list[list[str]]:
    table = [["CONTAINER", "ADDRESSES", "PUBLISHED", "REACHABLE BY"]]
    for row in rows:
        name = printable(row.container.name)
        addresses = ", ".join(str(a) for a in row.addresses) or "-"
        if not row.ports:
            table.append([name, addresses, "-", "(no published ports)"])
        for i, port in enumerate(row.ports):
            reach = "; ".join(_with_hits(a, hits) for a in port.allows) or "nobody"
            if port.public:
                reach = "ANYONE: " + reach
            first = i == 0
            table.append(
                [name if first else "", addresses if first else "", _port_label(port), reach]
            )
    return table


def _with_hits(allow: Allow, hits: dict[str, Hits]) -> str:
    hit = hits.get(allow.rule)
    return who(allow) + (f" [{hit.packets} pkts]" if hit else "")


def table_text(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def default_line(hits: dict[str, Hits]) -> str:
    hit = hits.get(DEFAULT_HITS, Hits(0, 0))
    return f"default verdict turned away {hit.packets} packets ({hit.bytes} bytes)"


def status_json(
    header: dict[str, Any], rows: tuple[ContainerExposure, ...], hits: dict[str, Hits]
) -> str:
    containers = [
        {
            "name": r.container.name,
            "id": r.container.id,
            "addresses": [str(a) for a in r.addresses],
            "ports": [
                {
                    "host_ip": str(p.port.host_ip) if p.port.host_ip else None,
                    "host_port": p.port.host_port,
                    "container_port": p.port.container_port,
                    "proto": p.port.proto.value,
                    "public": p.public,
                    "rules": [
                        {
                            "name": a.rule,
                            "from": list(a.source_names),
                            "via": a.via,
                            "packets": hits.get(a.rule, Hits(0, 0)).packets,
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
    doc = {**header, "containers": containers, "default_dropped_packets": default.packets}
    return json.dumps(doc, indent=2)


def printable(text: str) -> str:
    """Names come from whoever runs containers: never let them put control codes on a tty."""
    return "".join(c if c.isprintable() else "?" for c in text)
