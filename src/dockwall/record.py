"""What dockwall last applied, kept beside the kernel rules (in /run: gone at reboot, like them).

Lets `status` say when the rules were applied and `plan` speak in policy terms: which rules
gain or lose which containers. $DOCKWALL_STATE names another file (tests use one per sandbox).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockwall.model.hoststate import HostState
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset
from dockwall.model.values import LogRate, PortRange, Proto, ProxyCgroup, Verdict

DEFAULT_PATH = Path("/run/dockwall/applied.json")


@dataclass(frozen=True)
class Record:
    policy: str
    sha256: str
    applied_at: float  # seconds since the epoch
    ruleset: Ruleset
    names: dict[str, str]  # container address -> name, as the host was then


def path() -> Path:
    return Path(os.environ.get("DOCKWALL_STATE", DEFAULT_PATH))


def save(policy: str, sha256: str, ruleset: Ruleset, host: HostState) -> None:
    """Write atomically (a new file renamed over the old)."""
    names = {
        str(a): c.name
        for c in host.containers
        for ep in c.endpoints
        for a in (ep.ipv4, ep.ipv6)
        if a is not None
    }
    doc = {
        "policy": os.path.abspath(policy),  # (read-only commands find it from anywhere)
        "sha256": sha256,
        "applied_at": time.time(),
        "ruleset": _ruleset(ruleset),
        "names": names,
    }
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_suffix(".tmp")
    temp.write_text(json.dumps(doc, separators=(",", ":")))
    temp.replace(target)


def load() -> Record | None:
    """The record, or None if there is none or it can't be read (then nothing is claimed)."""
    try:
        doc = json.loads(path().read_text())
        return Record(
            doc["policy"],
            doc["sha256"],
            float(doc["applied_at"]),
            _from_ruleset(doc["ruleset"]),
            dict(doc["names"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget() -> None:
    path().unlink(missing_ok=True)


def _ruleset(r: Ruleset) -> dict[str, Any]:
    return {
        "bridges": list(r.bridges),
        "prefixes": list(r.bridge_prefixes),
        "default": r.default.value,
        "log_default": r.log_default,
        "log_rate": [r.log_rate.count, r.log_rate.unit, r.log_rate.burst],
        "quarantine": _nets(r.quarantine),
        "quarantine_bridges": list(r.quarantine_bridges),
        "allows": [
            {
                "rule": a.rule,
                "line": a.line,
                "from": list(a.source_names),
                "via": a.via,
                "sources": _nets(a.sources),
                "destinations": _nets(a.destinations),
                "ports": None if a.ports is None else [str(p) for p in a.ports],
                "log": a.log,
                "listeners": _listeners(a.listeners),
            }
            for a in r.allows
        ],
        "listeners": _listeners(r.listeners),
        "quarantine_listeners": _listeners(r.quarantine_listeners),
        "proxy_cgroup": _cgroup(r.proxy_cgroup),
        "outbound": _egresses(r.outbound),
        "outbound_default": None if r.outbound_default is None else r.outbound_default.value,
        "between": _egresses(r.between),
        "between_default": None if r.between_default is None else r.between_default.value,
    }


def _egresses(found: tuple[Egress, ...]) -> list[dict[str, Any]]:
    return [
        {
            "rule": e.rule,
            "line": e.line,
            "from": list(e.source_names),
            "sources": _nets(e.sources),
            "destinations": _nets(e.destinations),
            "ports": None if e.ports is None else [str(p) for p in e.ports],
            "via": e.via,
            "log": e.log,
            "to_containers": e.to_containers,
        }
        for e in found
    ]


def _from_egresses(found: list[dict[str, Any]] | None) -> tuple[Egress, ...]:
    return tuple(
        Egress(
            e["rule"],
            int(e["line"]),
            tuple(e["from"]),
            _from_nets(e["sources"]) or (),
            _from_nets(e["destinations"]),
            None if e["ports"] is None else tuple(PortRange.parse(p) for p in e["ports"]),
            e["via"],
            bool(e["log"]),
            bool(e["to_containers"]),
        )
        for e in found or []
    )


def _from_verdict(value: str | None) -> Verdict | None:
    return None if value is None else Verdict(value)


def _from_ruleset(doc: dict[str, Any]) -> Ruleset:
    allows = tuple(
        Allow(
            a["rule"],
            int(a["line"]),
            tuple(a["from"]),
            a["via"],
            _from_nets(a["sources"]),
            _from_nets(a["destinations"]),
            None if a["ports"] is None else tuple(PortRange.parse(p) for p in a["ports"]),
            bool(a["log"]),
            _from_listeners(a.get("listeners")),
        )
        for a in doc["allows"]
    )
    count, unit, burst = doc["log_rate"]
    return Ruleset(
        tuple(doc["bridges"]),
        tuple(doc["prefixes"]),
        allows,
        Verdict(doc["default"]),
        bool(doc["log_default"]),
        LogRate(count, unit, burst),
        _from_nets(doc.get("quarantine", [])),
        tuple(doc.get("quarantine_bridges", [])),
        _from_listeners(doc.get("listeners")) or (),
        _from_listeners(doc.get("quarantine_listeners")) or (),
        _from_cgroup(doc.get("proxy_cgroup")),
        _from_egresses(doc.get("outbound")),
        _from_verdict(doc.get("outbound_default")),
        _from_egresses(doc.get("between")),
        _from_verdict(doc.get("between_default")),
    )


def _cgroup(found: ProxyCgroup | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"path": found.path, "level": found.level, "own": [[p.value, n] for p, n in found.own]}


def _from_cgroup(doc: dict[str, Any] | None) -> ProxyCgroup | None:
    if doc is None:
        return None
    own = tuple((Proto(p), int(n)) for p, n in doc.get("own", []))
    return ProxyCgroup(str(doc["path"]), int(doc["level"]), own)


def _listeners(found: tuple[Listener, ...] | None) -> list[list[Any]] | None:
    return None if found is None else [[x.proto.value, x.port, str(x.address)] for x in found]


def _from_listeners(found: list[list[Any]] | None) -> tuple[Listener, ...] | None:
    if found is None:
        return None
    return tuple(Listener(Proto(p), int(n), ipaddress.ip_network(a)) for p, n, a in found)


def _nets(nets: tuple[Any, ...] | None) -> list[str] | None:
    if nets is None:
        return None
    # A policy's source lists are the same tuple objects in every compile (policy
    # canonical): the daemon writes the record at every change, and spelling 10,000
    # addresses out each time (15 us each) would cost it more than the change itself.
    known = _spelled.get(id(nets))
    if known is not None and known[0] is nets:
        return known[1]
    if len(_spelled) >= _REMEMBERED:
        _spelled.clear()
    text = [str(n) for n in nets]
    _spelled[id(nets)] = (nets, text)  # (the tuple is kept: its id can't be reused)
    return text


_REMEMBERED = 512  # lists
_spelled: dict[int, tuple[tuple[Any, ...], list[str]]] = {}


def _from_nets(nets: list[str] | None) -> Any:
    return None if nets is None else tuple(ipaddress.ip_network(n) for n in nets)
