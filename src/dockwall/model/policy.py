"""The policy file: schema, validation with located errors, and the resolved Policy."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dockwall.errors import PolicyError, Problem, UnsafeValueError
from dockwall.model import yamlsource
from dockwall.model.values import (
    DEFAULT_LOG_RATE,
    IPNetwork,
    LogRate,
    PortRange,
    Verdict,
    checked_ifname,
    checked_name,
    parse_network,
)

ANY = "any"
_In = TypeVar("_In")
_Out = TypeVar("_Out")


# ---- resolved policy: what the compiler consumes ---------------------------------------------


@dataclass(frozen=True)
class Selector:
    """Which containers a rule is about. Every key that is set must match."""

    container: str | None = None  # glob on the container name
    label: tuple[str, str | None] | None = None  # key, and value if "key=value"
    network: str | None = None
    compose: tuple[str | None, str] | None = None  # project (optional), service

    def __str__(self) -> str:
        parts = []
        if self.container is not None:
            parts.append(f"container={self.container}")
        if self.label is not None:
            key, value = self.label
            parts.append(f"label={key}" + ("" if value is None else f"={value}"))
        if self.network is not None:
            parts.append(f"network={self.network}")
        if self.compose is not None:
            project, service = self.compose
            parts.append(f"compose={project + '/' if project else ''}{service}")
        return ",".join(parts)


class Direction(StrEnum):
    """Which traffic a rule is about, said by what its from and to name."""

    INBOUND = "inbound"  # from addresses (outside) to containers
    OUTBOUND = "outbound"  # from containers to addresses outside the host
    BETWEEN = "between"  # from containers to containers


@dataclass(frozen=True)
class Rule:
    name: str
    sources: tuple[IPNetwork, ...] | None  # inbound: None for any source
    source_names: tuple[str, ...]  # as written: group names, addresses, "any"; or selectors
    via: str | None  # host interface the traffic arrives on (inbound) or leaves by (outbound)
    targets: tuple[Selector, ...] | None  # inbound, between: None for every container
    ports: tuple[PortRange, ...] | None  # None: every port (inbound: every published one)
    line: int  # where the rule starts in the policy file
    log: bool = False  # log drops of traffic this rule's containers would get (or send)
    direction: Direction = Direction.INBOUND
    origins: tuple[Selector, ...] = ()  # outbound, between: the containers it is from
    remote: tuple[IPNetwork, ...] | None = None  # outbound: where to; None for anywhere
    remote_names: tuple[str, ...] = ()  # outbound, as written


@dataclass(frozen=True)
class Defaults:
    """What happens to traffic no rule allows, per direction. None (accept): dockwall does
    not govern that direction, Docker's own rules decide."""

    inbound: Verdict = Verdict.DROP
    outbound: Verdict | None = None
    between: Verdict | None = None


@dataclass(frozen=True)
class Policy:
    filename: str
    digest: str  # sha256 of the file's bytes
    default: Verdict  # inbound's (defaults.inbound)
    groups: Mapping[str, tuple[IPNetwork, ...]]
    rules: tuple[Rule, ...]
    log: bool = False  # log every default drop
    log_rate: LogRate = DEFAULT_LOG_RATE
    backend: str = "auto"  # auto | iptables | nftables; the command line may override it
    outbound: Verdict | None = None  # defaults.outbound; None: accept (not governed)
    between: Verdict | None = None  # defaults.between; None: accept (not governed)


# ---- the file's schema -----------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _parse_pair(text: str, sep: str) -> tuple[str, str | None]:
    head, found, tail = text.partition(sep)
    if not head or (found and not tail):
        raise ValueError(f"{text!r} is not of the form 'a' or 'a{sep}b'")
    return head, (tail if found else None)


class SelectorDoc(_Doc):
    """Containers chosen by what they are, not by address: every field given must match."""

    container: str | None = Field(
        default=None, description="Container name; a glob: 'www-*' (shell patterns: *, ?, [..])."
    )
    label: str | None = Field(
        default=None, description="A label the container has: 'key' (any value) or 'key=value'."
    )
    network: str | None = Field(default=None, description="A Docker network the container is on.")
    compose: str | None = Field(
        default=None, description="A Compose service: 'service', or 'project/service'."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> SelectorDoc:
        if not any((self.container, self.label, self.network, self.compose)):
            raise ValueError("a selector needs at least one of container, label, network, compose")
        return self

    def resolve(self) -> Selector:
        label = _parse_pair(self.label, "=") if self.label else None
        compose = None
        if self.compose:
            first, second = _parse_pair(self.compose, "/")
            compose = (first, second) if second is not None else (None, first)
        return Selector(self.container, label, self.network, compose)


def _entry_kind(value: Any) -> str:
    return "selector" if isinstance(value, dict | SelectorDoc) else "address"


# An entry of from or to: a selector (a mapping) or an address, group, "any" or "*".
Entry = Annotated[
    Annotated[SelectorDoc, Tag("selector")] | Annotated[str, Tag("address")],
    Discriminator(_entry_kind),
]


class LogDoc(_Doc):
    """Drop logging, with its rate limit."""

    rate: str = Field(
        default="5/second", description="At most this many log lines: 'N/second|minute|hour|day'."
    )
    burst: int = Field(default=10, description="Lines that may come at once before the rate holds.")


_ENTRIES = "one entry or a list"
_Entries = Annotated[list[Entry], Field(min_length=1)]
_PORT = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535},
        {"type": "string", "pattern": r"^[0-9]+(-[0-9]+)?(/(tcp|udp))?$"},
    ]
}
_PortsInput = Annotated[int | str | list[int | str], WithJsonSchema({
    "anyOf": [_PORT, {"type": "array", "items": _PORT, "minItems": 1}]
})]  # fmt: skip


class RuleDoc(_Doc):
    """Who may reach what. The direction is what from and to name: addresses to containers
    (inbound), containers to addresses (outbound), containers to containers (between)."""

    name: str = Field(description="The rule's name: letters, digits, '-', '_', '.'; unique.")
    log: bool = Field(
        default=False,
        description="Log (rate-limited) what this rule's containers are sent and dropped.",
    )
    # addresses, groups and "any" (traffic from outside), or selectors (from containers)
    from_: list[Entry] = Field(
        alias="from",
        min_length=1,
        description="Where traffic comes from: addresses, CIDR ranges, group names and 'any' "
        "(from outside), or container selectors (outbound and between rules); " + _ENTRIES + ".",
    )
    via: str | None = Field(
        default=None,
        description="The host interface it arrives on (inbound) or leaves by (outbound).",
    )
    # selectors or "*" (to containers), or addresses, groups and "any" (outside the host)
    to: list[Entry] | None = Field(
        default=None,
        min_length=1,
        description="Where it goes: container selectors or '*' (every container), or, from "
        "containers, addresses, groups and 'any' outside the host; "
        + _ENTRIES
        + ". Left out: every container (inbound rules only).",
    )
    ports: tuple[PortRange, ...] | None = Field(
        default=None,
        description="The ports dialed: 443, '443/tcp', '8000-8100/udp' (tcp if not said); "
        + _ENTRIES
        + ". Left out: every port.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _unsafe_to_value_error(checked_name, value)

    @field_validator("from_", mode="before", json_schema_input_type=Entry | _Entries)
    @classmethod
    def _from(cls, value: Any) -> Any:
        return [v if isinstance(v, str | dict) else str(v) for v in _as_list(value)]

    @field_validator("via")
    @classmethod
    def _via(cls, value: str | None) -> str | None:
        return None if value is None else _unsafe_to_value_error(checked_ifname, value)

    @field_validator("to", mode="before", json_schema_input_type=Entry | _Entries | None)
    @classmethod
    def _to(cls, value: Any) -> Any:
        if value == []:
            raise ValueError("[] names nothing (leave to out for every container)")
        return [v if isinstance(v, str | dict) else str(v) for v in _as_list(value)]

    @field_validator("ports", mode="before", json_schema_input_type=_PortsInput | None)
    @classmethod
    def _ports(cls, value: Any) -> Any:
        if value is None:
            return None
        items = _as_list(value)
        if not items:
            raise ValueError("ports must not be empty (leave it out for every port)")
        return tuple(_unsafe_to_value_error(PortRange.parse, str(item)) for item in items)


MAX_RULES = 10_000  # far above any real policy; a bound on work and on the problems listed


Openness = Literal["accept", "drop", "reject"]


class DefaultsDoc(_Doc):
    """What happens to traffic no rule allows, per direction."""

    inbound: Verdict | None = Field(
        default=None, description="From outside to containers: drop (the default) or reject."
    )
    outbound: Openness = Field(
        default="accept",
        description="From containers out of the host: accept (not governed), drop or reject.",
    )
    between: Openness = Field(
        default="accept", description="Between containers: accept (not governed), drop or reject."
    )


class PolicyDoc(_Doc):
    """A dockwall policy: who may reach the containers on a Docker host, and what they may
    reach. `dockwall validate -p FILE` checks one, with file and line for each problem."""

    model_config = ConfigDict(title="dockwall policy")

    version: Literal[1] = Field(description="The policy format: 1.")
    default: Verdict | None = Field(
        default=None, description="Shorthand for defaults.inbound (give one or the other)."
    )
    defaults: DefaultsDoc = Field(
        default_factory=DefaultsDoc, description="What no rule allows gets, per direction."
    )
    log: bool | LogDoc = Field(
        default=False, description="Log (rate-limited) what the defaults drop: true, or a rate."
    )
    backend: Literal["auto", "iptables", "nftables"] = Field(
        default="auto",
        description="Firewall backend; auto: nftables where Docker runs its nftables "
        "firewall backend or there is no iptables, else iptables.",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Named lists of addresses and CIDR ranges, for from and to.",
    )
    rules: list[RuleDoc] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="The rules: each allows some traffic; what none allows gets the default.",
    )

    @field_validator("groups", mode="before", json_schema_input_type=dict[str, str | list[str]])
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: [str(v) for v in _as_list(items or [])] for k, items in value.items()}


def policy_schema() -> dict[str, Any]:
    """The policy file's JSON Schema (draft 2020-12), from the model above: the forms the
    file may take. What the model checks beyond forms (a group that exists, from and to of
    one direction) is only the model's to find: `dockwall validate`."""
    found = PolicyDoc.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **found}


def _unsafe_to_value_error(check: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return check(value)
    except UnsafeValueError as exc:
        raise ValueError(str(exc)) from None


# ---- loading ---------------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    """Read, validate and resolve a policy file. Raises PolicyError listing every problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(
            [Problem(str(path), f"cannot read policy file: {exc.strerror}")]
        ) from None
    return parse_policy(raw, str(path))


def parse_policy(raw: bytes, filename: str) -> Policy:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError([Problem(filename, "policy file is not UTF-8 text")]) from None
    located = yamlsource.load(text, filename)
    if not isinstance(located.data, dict):
        raise PolicyError([Problem(filename, "policy must be a mapping with 'version: 1'")])
    try:
        doc = PolicyDoc.model_validate(located.data)
    except ValidationError as exc:
        raise PolicyError([_problem(err, located) for err in exc.errors()]) from None
    groups, problems = _resolve_groups(doc, located)
    rules = []
    for index, rule_doc in enumerate(doc.rules):
        rule, rule_problems = _resolve_rule(index, rule_doc, groups, located)
        rules.append(rule)
        problems += rule_problems
    problems += _duplicate_names(doc, located)
    if problems:
        raise PolicyError(problems)
    log_doc = doc.log if isinstance(doc.log, LogDoc) else LogDoc()
    try:
        rate = LogRate.parse(log_doc.rate, log_doc.burst)
    except UnsafeValueError as exc:
        raise PolicyError([Problem(located.where(("log",)), f"log: {exc}")]) from None
    digest = hashlib.sha256(raw).hexdigest()
    log = doc.log is not False
    inbound, outbound, between = _defaults(doc, located)
    return Policy(
        filename, digest, inbound, groups, tuple(rules), log, rate, doc.backend, outbound, between
    )


def _defaults(
    doc: PolicyDoc, located: yamlsource.Located
) -> tuple[Verdict, Verdict | None, Verdict | None]:
    """inbound (default: or defaults.inbound, not both), outbound, between (None: accept)."""
    if doc.default is not None and doc.defaults.inbound is not None:
        where = located.where(("defaults", "inbound"))
        raise PolicyError([Problem(where, TWO_INBOUND_DEFAULTS)])
    inbound = doc.default or doc.defaults.inbound or Verdict.DROP

    def verdict(value: str) -> Verdict | None:
        return None if value == "accept" else Verdict(value)

    return inbound, verdict(doc.defaults.outbound), verdict(doc.defaults.between)


TWO_INBOUND_DEFAULTS = (
    "defaults.inbound: the inbound default is given twice (default: is its shorthand): keep one"
)


def _resolve_groups(
    doc: PolicyDoc, located: yamlsource.Located
) -> tuple[dict[str, tuple[IPNetwork, ...]], list[Problem]]:
    groups: dict[str, tuple[IPNetwork, ...]] = {}
    problems: list[Problem] = []
    for name, entries in doc.groups.items():
        where = located.where(("groups", name))
        if name == ANY or not name[:1].isalpha():
            problems.append(
                Problem(
                    where,
                    f"group {name!r}: a group name must start with a "
                    f"letter and must not be {ANY!r}",
                )
            )
            continue
        try:
            checked_name(name)
            groups[name] = tuple(parse_network(entry) for entry in entries)
        except UnsafeValueError as exc:
            problems.append(Problem(where, f"group {name!r}: {exc}"))
    return groups, problems


def _resolve_rule(
    index: int,
    doc: RuleDoc,
    groups: Mapping[str, tuple[IPNetwork, ...]],
    located: yamlsource.Located,
) -> tuple[Rule, list[Problem]]:
    """A rule's direction is what its from and to name: from addresses to containers
    (inbound), from containers to addresses (outbound), from containers to containers
    (between). Anything else is a located error."""
    at = _At(located, index, doc.name, groups)
    line = located.lines.get(("rules", index), 0)
    addresses = tuple(v for v in doc.from_ if isinstance(v, str))
    rule = Rule(doc.name, None, addresses, doc.via, None, doc.ports, line, doc.log)
    origins = tuple(v.resolve() for v in doc.from_ if isinstance(v, SelectorDoc))
    to = _To.of(doc.to)
    mixed = (MIXED_FROM, "from") if origins and addresses else to.mixed()
    if mixed is not None:
        return rule, [at.problem(*mixed)]
    if not origins:
        return _inbound(rule, doc, to, at)
    return _from_containers(rule, doc, origins, to, at)


@dataclass(frozen=True)
class _At:
    """Where a rule is, for its problems, and the groups its addresses may name."""

    located: yamlsource.Located
    index: int
    name: str
    groups: Mapping[str, tuple[IPNetwork, ...]]

    def problem(self, what: str, *path: str | int) -> Problem:
        where = self.located.where(("rules", self.index, *path))
        return Problem(where, f"rule {self.name!r}: {what}")


@dataclass(frozen=True)
class _To:
    """A rule's to, sorted: omitted (None), containers, '*', addresses."""

    given: bool
    containers: tuple[Selector, ...]
    every: bool
    addresses: tuple[tuple[int, str], ...]  # (position in to, entry)

    @staticmethod
    def of(entries: list[SelectorDoc | str] | None) -> _To:
        found = list(enumerate(entries or []))
        return _To(
            entries is not None,
            tuple(v.resolve() for _, v in found if isinstance(v, SelectorDoc)),
            any(v == EVERY for _, v in found),
            tuple((i, v) for i, v in found if isinstance(v, str) and v != EVERY),
        )

    def mixed(self) -> tuple[str, str] | None:
        if self.addresses and (self.containers or self.every):
            return MIXED_TO, "to"
        return (MIXED_TO, "to") if self.every and self.containers else None


def _inbound(rule: Rule, doc: RuleDoc, to: _To, at: _At) -> tuple[Rule, list[Problem]]:
    if to.addresses:
        return rule, [at.problem(INBOUND_TO_ADDRESSES, "to")]
    froms = tuple((i, v) for i, v in enumerate(doc.from_) if isinstance(v, str))
    sources, problems = _addresses("from", froms, at)
    targets = to.containers if to.given and not to.every else None
    return replace(rule, sources=sources, targets=targets), problems


def _from_containers(
    rule: Rule, doc: RuleDoc, origins: tuple[Selector, ...], to: _To, at: _At
) -> tuple[Rule, list[Problem]]:
    rule = replace(rule, source_names=tuple(str(o) for o in origins), origins=origins)
    if not to.given:
        return rule, [at.problem(FROM_CONTAINERS_NOWHERE, "from")]
    if not to.addresses:
        if doc.via is not None:
            return rule, [at.problem(BETWEEN_VIA, "via")]
        targets = None if to.every else to.containers
        return replace(rule, targets=targets, direction=Direction.BETWEEN), []
    remote, problems = _addresses("to", to.addresses, at)
    names = tuple(v for _, v in to.addresses)
    outbound = replace(rule, remote=remote, remote_names=names, direction=Direction.OUTBOUND)
    return outbound, problems


EVERY = "*"  # to: every container
MIXED_FROM = (
    "from: mixes containers and addresses: a rule is about traffic from outside (addresses, "
    "groups, any) or from containers ({container: ...}), not both"
)
MIXED_TO = (
    "to: mixes containers and addresses: a rule goes to containers ({container: ...} or "
    "'*') or to addresses outside the host (addresses, groups, any), not both"
)
INBOUND_TO_ADDRESSES = (
    "to: addresses are for rules from containers (outbound: from: {container: ...}); "
    "traffic from outside goes to containers ({container: ...} or '*')"
)
FROM_CONTAINERS_NOWHERE = (
    "to: missing: a rule from containers says where to: addresses, groups or any "
    "(outbound), or containers or '*' (between)"
)
BETWEEN_VIA = "via: traffic between containers does not cross a host interface"


def _addresses(
    key: str, entries: tuple[tuple[int, str], ...], at: _At
) -> tuple[tuple[IPNetwork, ...] | None, list[Problem]]:
    """Addresses, groups and "any" (None: any address), resolved; entries are the rule's
    key (from or to) that are not selectors, with their positions."""
    found: list[IPNetwork] | None = []
    problems = []
    for pos, entry in entries:
        if entry == ANY:
            found = None
        elif entry in at.groups:
            found = None if found is None else [*found, *at.groups[entry]]
        else:
            try:
                net = parse_network(entry)
            except UnsafeValueError as exc:
                what = f"unknown group {entry!r}" if entry[:1].isalpha() else str(exc)
                problems.append(at.problem(f"{key}: {what}", key, pos))
                continue
            found = None if found is None else [*found, net]
    return (None if found is None else canonical(found)), problems


def canonical(nets: list[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Sources without repeats, IPv4 first, in address order: the form the Ruleset uses,
    made once per policy load so that every compile shares the same tuple."""
    return tuple(sorted(set(nets), key=lambda n: (n.version, n)))


def _duplicate_names(doc: PolicyDoc, located: yamlsource.Located) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for index, rule in enumerate(doc.rules):
        if rule.name in seen:
            where = located.where(("rules", index, "name"))
            problems.append(Problem(where, f"rule {rule.name!r}: name used by an earlier rule"))
        seen.add(rule.name)
    return problems


def _problem(err: Any, located: yamlsource.Located) -> Problem:
    loc = tuple(err["loc"])
    path = _yaml_path(loc, located)
    what = _message(err, loc)
    prefix = ""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rules = located.data.get("rules")
        name = rules[path[1]].get("name") if isinstance(rules[path[1]], dict) else None
        prefix = f"rule {name!r}: " if isinstance(name, str) else f"rules[{path[1]}]: "
        path = path[2:]
    field = ".".join(str(p) for p in path)
    return Problem(located.where(_yaml_path(loc, located)), f"{prefix}{field}: {what}".strip())


def _yaml_path(loc: tuple[Any, ...], located: yamlsource.Located) -> tuple[str | int, ...]:
    """Drop the parts of a pydantic location that name schema types, not keys."""
    path: tuple[str | int, ...] = ()
    for part in loc:
        candidate = (*path, part)
        if candidate in located.lines or part == loc[-1]:
            path = candidate
    return path


def _message(err: Any, loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return f"missing key {loc[-1]!r}"
    if loc == ("version",):
        return "must be 1 (the only policy version so far)"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")
