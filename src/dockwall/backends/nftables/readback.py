"""Read `nft -j list table inet dockwall` into the shape render.py builds. Pure.

Every expression render.py writes is read back into the very fragment render.py wrote;
anything else (an edited rule, a statement added by hand, a map, a named counter) becomes a
fragment or an extra that render.py never makes, so the tables differ and apply repairs it.
Counters are kept apart (they change all the time and are no part of the comparison).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockwall.backends.base import DEFAULT_HITS, FamilyHits, Hits
from dockwall.backends.nftables.model import (
    FAMILY,
    NAME,
    Chain,
    NftSet,
    Rule,
    Table,
    address,
    element_key,
    ports,
    table,
)
from dockwall.errors import BackendError
from dockwall.model.values import cgroup_level

_VERDICTS = ("accept", "drop", "return", "continue")
_QUOTED = ("iifname", "oifname")
_CGROUP = {"socket": {"key": "cgroupv2"}}


@dataclass(frozen=True)
class Counted:
    chain: str
    rule: Rule
    hits: Hits


@dataclass(frozen=True)
class Installed:
    table: Table
    counters: tuple[Counted, ...]


def parse(text: str) -> Installed:
    try:
        objects = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"cannot read nft's JSON output: {exc}") from None
    sets: list[NftSet] = []
    chains: dict[str, tuple[str, list[Rule]]] = {}
    counters: list[Counted] = []
    extras: list[str] = []
    for obj in objects:
        kind, body = next(iter(obj.items()))
        if kind in ("metainfo", "table") or not isinstance(body, dict):
            continue
        if body.get("family") != FAMILY or body.get("table") != NAME:
            continue
        if kind == "set":
            sets.append(_set(body))
        elif kind == "chain":
            chains.setdefault(body["name"], ("", []))
            chains[body["name"]] = (_base(body), chains[body["name"]][1])
        elif kind == "rule":
            rule, hits = _rule(body)
            chains.setdefault(body["chain"], ("", []))[1].append(rule)
            if hits is not None:
                counters.append(Counted(body["chain"], rule, hits))
        else:
            extras.append(f"{kind} {body.get('name', '')}".strip())
    found = [Chain(name, tuple(rules), base) for name, (base, rules) in chains.items()]
    return Installed(table(sets, found, tuple(extras)), tuple(counters))


def hits(installed: Installed) -> FamilyHits:
    """Per policy rule and family: the counters of its accept rules (by comment); the
    defaults': every counted drop or reject (family None where one rule drops both)."""
    totals: FamilyHits = {}
    for counted in installed.counters:
        verdict = counted.rule.exprs[-1] if counted.rule.exprs else ""
        comment = counted.rule.comment
        if verdict == "accept" and comment.startswith("dockwall:"):
            key = comment.removeprefix("dockwall:")
        elif verdict == "drop" or verdict.startswith("reject"):
            key = DEFAULT_HITS
        else:
            continue
        where = (key, counted.rule.family)
        old = totals.get(where, Hits(0, 0))
        totals[where] = Hits(old.packets + counted.hits.packets, old.bytes + counted.hits.bytes)
    return totals


def _set(body: dict[str, Any]) -> NftSet:
    kind = body.get("type", "")
    type_ = " . ".join(kind) if isinstance(kind, list) else str(kind)
    if "map" in body:
        type_ += f" : {body['map']}"
    flags = ",".join(sorted(body.get("flags", [])))
    elements = [e for elem in body.get("elem", []) for e in _element(elem)]
    return NftSet(body["name"], type_, tuple(sorted(set(elements), key=element_key)), flags)


def _element(elem: Any) -> list[str]:
    """Canonical element text; an address range that is not one prefix becomes prefixes."""
    if isinstance(elem, dict) and "elem" in elem:  # an element with a timeout or comment
        return [_unknown(elem)]
    if isinstance(elem, dict) and "concat" in elem:
        return [" . ".join(_part(p) for p in elem["concat"])]
    if isinstance(elem, dict) and "range" in elem:
        first, last = elem["range"]
        if isinstance(first, str):
            span = ipaddress.summarize_address_range(
                ipaddress.ip_address(first), ipaddress.ip_address(last)
            )
            return [address(n) for n in span]
    return [_part(elem)]


def _part(part: Any) -> str:
    if isinstance(part, int):
        return str(part)
    if isinstance(part, str):
        try:
            return address(ipaddress.ip_network(part))
        except ValueError:
            return part
    if isinstance(part, dict) and "prefix" in part:
        prefix = part["prefix"]
        return address(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}"))
    if isinstance(part, dict) and "range" in part:
        first, last = part["range"]
        return ports(first, last) if isinstance(first, int) else f"{first}-{last}"
    return _unknown(part)


def _unknown(value: Any) -> str:
    """A fragment render.py never writes: whatever it stands for, it makes the tables differ."""
    return f"? {json.dumps(value, sort_keys=True)}"


def _base(body: dict[str, Any]) -> str:
    if "hook" not in body:
        return ""
    return (
        f"type {body.get('type')} hook {body['hook']} priority {body.get('prio')}; "
        f"policy {body.get('policy')};"
    )


def _rule(body: dict[str, Any]) -> tuple[Rule, Hits | None]:
    exprs, counted = [], None
    for statement in body.get("expr", []):
        kind, value = next(iter(statement.items()))
        if kind == "counter" and isinstance(value, dict):
            counted = Hits(int(value.get("packets", 0)), int(value.get("bytes", 0)))
            exprs.append("counter")
        else:
            exprs.append(_statement(kind, value))
    return Rule(tuple(exprs), str(body.get("comment", ""))), counted


def _statement(kind: str, value: Any) -> str:
    if kind in _VERDICTS and value is None:
        return kind
    read = _STATEMENTS.get(kind)
    found = read(value) if read is not None and isinstance(value, dict) else None
    return _unknown({kind: value}) if found is None else found


def _jump(kind: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda value: f"{kind} {value.get('target')}"


def _reject(value: dict[str, Any]) -> str | None:
    if set(value) != {"type", "expr"}:
        return None
    return f"reject with {value['type']} {value['expr']}"


def _limit(value: dict[str, Any]) -> str | None:
    if set(value) != {"rate", "burst", "per"}:
        return None
    return f"limit rate {value['rate']}/{value['per']} burst {value['burst']} packets"


def _log(value: dict[str, Any]) -> str | None:
    return f'log prefix "{value["prefix"]}"' if set(value) == {"prefix"} else None


def _match(match: dict[str, Any]) -> str:
    if match.get("left") == _CGROUP and isinstance(match.get("right"), str):
        # nft's JSON leaves the level out: it is the path's depth, as render.py writes it
        path = match["right"]
        return f'socket cgroupv2 level {cgroup_level(path)} "{path}"'
    left = _left(match.get("left"))

    right = _right(match.get("right"), quoted=left in _QUOTED)
    op = match.get("op", "==")
    return f"{left} {right}" if op in ("==", "in") else f"{left} {op} {right}"


def _left(expr: Any) -> str:
    if not (isinstance(expr, dict) and len(expr) == 1):
        return _unknown(expr)
    kind, value = next(iter(expr.items()))
    if kind == "concat" and isinstance(value, list):
        return " . ".join(_left(e) for e in value)
    if kind == "meta" and isinstance(value, dict):
        key = value.get("key")
        return str(key) if key in _QUOTED else f"meta {key}"
    if kind == "ct" and isinstance(value, dict):
        direction = f"{value['dir']} " if "dir" in value else ""
        return f"ct {direction}{value.get('key')}"
    if kind == "payload" and isinstance(value, dict) and "protocol" in value:
        return f"{value['protocol']} {value.get('field')}"
    return _unknown(expr)


def _right(expr: Any, quoted: bool) -> str:
    if isinstance(expr, str):
        return f'"{expr}"' if quoted else expr
    if isinstance(expr, int):
        return str(expr)
    if isinstance(expr, list):  # flags, as in "ct state established,related"
        return ",".join(sorted(str(e) for e in expr))
    if isinstance(expr, dict) and isinstance(expr.get("set"), list):
        items = sorted(_right(e, quoted) for e in expr["set"])
        return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
    return _unknown(expr)


_STATEMENTS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "match": _match,
    "goto": _jump("goto"),
    "jump": _jump("jump"),
    "reject": _reject,
    "limit": _limit,
    "log": _log,
}
