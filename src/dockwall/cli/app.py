"""The operations behind the commands: load, snapshot, compile, plan, apply, remove.

No printing here; the CLI decides how results look.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from dockwall import record
from dockwall.backends.base import IN_SYNC, Backend, Change, Kernel, Sync
from dockwall.backends.iptables.backend import IptablesBackend
from dockwall.backends.nftables import (
    NftablesBackend,
    docker_firewall_backend,
    docker_uses_nftables,
)
from dockwall.compile import explain, flows, policydiff
from dockwall.compile.compiler import Compiled, compile_policy
from dockwall.errors import BackendError, DockerError
from dockwall.host import bridge_filtering, published_path, routes, snapshot
from dockwall.model.hoststate import Container, HostState
from dockwall.model.policy import Policy, load_policy
from dockwall.model.values import Family, IPAddress, Proto

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    policy: Policy
    host: HostState
    compiled: Compiled


BACKENDS = ("auto", "iptables", "nftables")  # what the command line and the policy may ask for
BackendName = Literal["iptables", "nftables"]
"""A backend dockwall installs rules with. "auto" is not one: it is a question about the host,
which only choose_backend answers (by detect_backend)."""

_MAKERS: dict[BackendName, Callable[[], Backend[Any, Any, Any]]] = {
    "iptables": IptablesBackend,
    "nftables": NftablesBackend,
}
_TOOLS: tuple[tuple[BackendName, str], ...] = (  # each backend's tool, to see if it is here
    ("iptables", "iptables-restore"),
    ("nftables", "nft"),
)


def backend(name: BackendName) -> Kernel[Any, Any, Any]:
    """The backend called `name`. Any other name, "auto" first, is a caller's mistake and a
    ValueError: this function has no Docker host to detect with, and a silent iptables would
    install the wrong rules where Docker runs its nftables firewall backend."""
    make = _MAKERS.get(name)
    if make is None:
        raise ValueError(_not_a_backend(name))
    return Kernel(make(), before_between=bridge_filtering.ensure)


def choose_backend(
    asked: str | None, policy: Policy | None, docker_host: str | None
) -> BackendName:
    """The command line's choice, else the policy's, else auto: the one place "auto" is
    resolved, by detect_backend on the Docker host that the command reads."""
    name = asked or (policy.backend if policy else "auto")
    if name == "auto":
        return detect_backend(docker_host)
    if name not in get_args(BackendName):
        raise ValueError(_not_a_backend(name))
    return cast(BackendName, name)


def _not_a_backend(name: str) -> str:
    return (
        f"{name!r} is not a firewall backend: iptables or nftables "
        '("auto" is resolved by choose_backend, which asks Docker)'
    )


def detect_backend(docker_host: str | None) -> BackendName:
    """What "auto" means on this host: nftables where Docker itself runs its nftables firewall
    backend or the host has no iptables (or no ipset, which the iptables backend keeps
    container addresses in) but has nft, else iptables (also when Docker can't be asked)."""
    missing = shutil.which("iptables-restore") is None or shutil.which("ipset") is None
    if missing and shutil.which("nft") is not None:
        return "nftables"
    try:
        info = snapshot.engine_info(snapshot.connect(docker_host))
    except DockerError:
        return "iptables"
    return "nftables" if docker_uses_nftables(info) else "iptables"


def docker_firewall(docker_host: str | None) -> str:
    """The firewall backend Docker itself uses, as its /info says ("not reported" before
    API 1.49, where it is iptables)."""
    return docker_firewall_backend(snapshot.engine_info(snapshot.connect(docker_host)))


def retire_others(kernel: Kernel[Any, Any, Any]) -> list[str]:
    """After applying with one backend, remove what dockwall installed with the other (a
    switch of backend leaves no second set of rules behind). Returns the names retired."""
    retired: list[str] = []
    for name, tool in _TOOLS:
        other = name != kernel.name and shutil.which(tool) is not None
        if other and remove(backend(name), forget=False).pending:
            retired.append(name)
    return retired


def remove_all() -> list[Change[Any]]:
    """Remove what either backend installed (each whose tool is on this host)."""
    done = []
    for name, tool in _TOOLS:
        if shutil.which(tool) is not None:
            done.append(remove(backend(name)))
    return done


def remove_one(name: str) -> Change[Any]:
    """Remove what dockwall installed with one backend; the apply record (and the bridge
    filtering dockwall turned on) go only once no backend has dockwall's rules installed."""
    change = remove(backend(cast(BackendName, name)), forget=False)
    others = [n for n, tool in _TOOLS if n != name and shutil.which(tool) is not None]
    if not any(backend(n).installed() for n in others):
        bridge_filtering.restore()
        record.forget()
    return change


def prepare(policy_path: Path, docker_host: str | None) -> Context:
    """Validate the policy first (so a typo never waits on Docker), then snapshot and compile."""
    return context(load_policy(policy_path), docker_host)


def context(policy: Policy, docker_host: str | None) -> Context:
    host = snapshot.take(snapshot.connect(docker_host))
    return Context(policy, host, compile_policy(policy, host))


def plan(ctx: Context, kernel: Kernel[Any, Any, Any]) -> Change[Any]:
    return kernel.plan(ctx.compiled.ruleset).change


def apply(ctx: Context, kernel: Kernel[Any, Any, Any]) -> Change[Any]:
    """Make the kernel match; return what was done. Verifies by reading back."""
    tx = kernel.plan(ctx.compiled.ruleset)
    change = tx.change
    if change.pending:
        kernel.apply(tx)
        if kernel.plan(ctx.compiled.ruleset).pending:
            raise BackendError("the installed rules differ from the applied ones after apply")
    if change.pending or record.load() is None:
        record.save(ctx.policy.filename, ctx.policy.digest, ctx.compiled.ruleset, ctx.host)
    return change


@dataclass(frozen=True)
class PlanResult:
    change: Change[Any]
    rules: list[str]  # in policy terms; empty when there is no record of what is installed
    reach: list[str]
    known: bool  # a record of what dockwall installed exists and the kernel still matches it


def plan_in_policy_terms(ctx: Context, kernel: Kernel[Any, Any, Any]) -> PlanResult:
    change = kernel.plan(ctx.compiled.ruleset).change
    last = record.load()
    known = last is not None and not kernel.plan(last.ruleset).pending
    if not known or last is None:
        return PlanResult(change, [], [], False)
    names = {**last.names, **ctx.host.names()}
    rules = policydiff.rule_changes(last.ruleset, ctx.compiled.ruleset, names)
    reach = policydiff.reach_changes(last.ruleset, ctx.compiled.ruleset, ctx.host)
    return PlanResult(change, rules, reach, True)


@dataclass(frozen=True)
class CheckResult:
    verdicts: list[explain.Verdict]
    sync: Sync  # whether the installed rules are what the current policy and host compile to
    via: str
    not_governed: str = ""  # why dockwall has no say, if it has none
    backend: str = ""  # the backend that answered

    @property
    def in_sync(self) -> bool:
        return self.sync.in_sync


def check(
    ctx: Context, kernel: Kernel[Any, Any, Any], request: CheckRequest, firewall: str = "iptables"
) -> CheckResult:
    """Explain what the installed rules do with connections from source to dest; firewall:
    Docker's own firewall backend (docker_firewall), whose rules decide next."""
    family = Family.of(request.source)
    try:
        explain.check_source(ctx.host, request.source)
        nat = published_path.present(family)
        found = explain.targets(
            ctx.host, request.dest, family, request.port, request.proto, nat=nat
        )
    except explain.NotGoverned as exc:
        return CheckResult([], IN_SYNC, request.via or "", str(exc))
    via = request.via or routes.interface_towards(request.source)
    packets = explain.packets(found, request.source, via)
    decisions, sync = kernel.decide(ctx.compiled.ruleset, packets)
    verdicts = explain.verdicts(found, decisions, ctx.policy, ctx.host.docker_version, firewall)
    return CheckResult(verdicts, sync, via, backend=kernel.name)


@dataclass(frozen=True)
class FlowsResult:
    """check from a container: its connections out of the host or to another container."""

    verdicts: list[flows.FlowVerdict]
    sync: Sync
    backend: str

    @property
    def in_sync(self) -> bool:
        return self.sync.in_sync


def check_flows(
    ctx: Context,
    kernel: Kernel[Any, Any, Any],
    source: Container,
    dest: str,
    *,
    port: int | None,
    proto: Proto,
) -> FlowsResult:
    """Explain what happens to the connections container source opens to dest."""
    found = flows.flows(ctx.host, source, dest, port, proto, route=routes.interface_towards)
    decisions, sync = kernel.decide(ctx.compiled.ruleset, [f.packet() for f in found])
    return FlowsResult(flows.verdicts(found, decisions, ctx.policy), sync, kernel.name)


@dataclass(frozen=True)
class CheckRequest:
    source: IPAddress
    dest: str
    port: int | None
    proto: Proto
    via: str | None


def remove(kernel: Kernel[Any, Any, Any], forget: bool = True) -> Change[Any]:
    """Take out what dockwall installed with kernel; forget: also the record of the apply."""
    tx = kernel.plan_remove()
    if tx.pending:
        kernel.apply(tx)
    if forget:
        bridge_filtering.restore()
        record.forget()
    return tx.change
