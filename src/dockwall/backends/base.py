"""What every backend offers, as four steps with typed values between them; the CLI and the
daemon only speak to this.

    render(Ruleset, previous) -> D     pure: the backend's rendering (D) of a Ruleset
    read() -> S                        what the kernel holds now (S), read back
    diff(D, S) -> Transaction[S, W]    pure: the writes (W, the backend's own) that turn S
                                       into D, and the S after
    apply(Transaction[S, W])           carry it out: all of it, or nothing

A backend object keeps nothing between calls: `apply` depends on its argument alone. Who
wants to skip reading the kernel (the daemon, between drift checks) keeps the S of its last
apply and diffs against that: `Kernel` below does exactly that, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from dockwall.model.packets import Decision, Packet
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Family


@dataclass(frozen=True)
class FamilyChange:
    """What one address family's rules would see change, for people (`dockwall plan`, the
    daemon's log). What is written is the backend's own (Change.writes)."""

    family: Family
    pending: bool = False  # something of this family's changes
    added: tuple[str, ...] = ()  # rule lines that appear
    removed: tuple[str, ...] = ()  # rule lines that go
    hook: str = ""  # what the hook into Docker's rules does, e.g. "insert jump in DOCKER-USER"


class Writes(Protocol):
    """A backend's writes in its own terms (the iptables backend: a restore per family and
    ipset steps around them; nftables: one transaction for both families, or a delta)."""

    @property
    def pending(self) -> bool: ...


W = TypeVar("W", bound=Writes)
S = TypeVar("S")  # what a backend's kernel holds
D = TypeVar("D")  # a backend's rendering of a Ruleset


@dataclass(frozen=True)
class Change(Generic[W]):
    """A transaction as people see it (families), with what the backend writes for it."""

    families: tuple[FamilyChange, ...]
    writes: W
    # Worked out as a difference from a trusted state, not from the kernel's rules: if the
    # kernel then differs from what was meant, with no one else's change seen, the delta
    # was wrong (see Kernel.distrust_deltas).
    delta: bool = False

    @property
    def pending(self) -> bool:
        return self.writes.pending


@dataclass(frozen=True)
class Transaction(Generic[S, W]):
    """The writes from `before` to `after`; apply needs nothing else."""

    change: Change[W]
    before: S  # what the kernel held when this was worked out (read back, or trusted)
    after: S | None  # what it holds once this is applied; None: not known (read it next)

    @property
    def pending(self) -> bool:
        return self.change.pending

    @property
    def families(self) -> tuple[FamilyChange, ...]:
        return self.change.families


@dataclass(frozen=True)
class Hits:
    packets: int
    bytes: int


@dataclass(frozen=True)
class Sync:
    """Whether the kernel holds a ruleset's rendering, and where it does not (for people:
    "ipv4 chain DOCKWALL-C2", "set allow4-admins", "not installed")."""

    differs: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        return not self.differs


IN_SYNC = Sync()
NOT_HOOKED = Sync(("dockwall's rules are not installed, or not hooked in",))

DEFAULT_HITS = "(default)"  # key of the default verdict's counter in Backend.hits()
# (rule name or DEFAULT_HITS, family): a family of None is a rule that counts both at once
FamilyHits = dict[tuple[str, Family | None], Hits]


def by_rule(hits: FamilyHits) -> dict[str, Hits]:
    """The counters of every family added up, per rule."""
    totals: dict[str, Hits] = {}
    for (key, _), hit in hits.items():
        old = totals.get(key, Hits(0, 0))
        totals[key] = Hits(old.packets + hit.packets, old.bytes + hit.bytes)
    return totals


class Backend(Protocol[D, S, W]):
    name: str
    deltas: bool  # from a trusted state, write what changed as a delta (else from scratch)
    # every write to its rules is told by nftables' change stream (so drift no one was seen
    # making after a delta of dockwall's is that delta's)
    writes_streamed: bool

    def render(self, ruleset: Ruleset, previous: D | None = None) -> D:
        """ruleset in the backend's terms. previous (an earlier rendering) may be reused
        where only some destinations differ; the result is the same either way."""
        ...

    def read(self) -> S:
        """What the kernel holds of dockwall's now."""
        ...

    def diff(self, desired: D, installed: S) -> Transaction[S, W]:
        """The transaction that makes installed into desired. Pure; writes nothing."""
        ...

    def removal(self, installed: S) -> Transaction[S, W]:
        """The transaction that removes everything of dockwall's in installed. Pure."""
        ...

    def apply(self, transaction: Transaction[S, W]) -> None:
        """Carry out a transaction: all of it, or nothing (then BackendError)."""
        ...

    def hits(self) -> FamilyHits:
        """Packets and bytes each policy rule let through (by rule name and family), and
        those of the defaults (DEFAULT_HITS)."""
        ...

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], Sync]:
        """What ruleset does with packets (dockwall.compile.decide, at the rendered line that
        does it), and whether the kernel holds ruleset's rendering, and where not (drift, or
        a policy changed but not applied)."""
        ...


@dataclass
class Kernel(Generic[D, S, W]):
    """One process's knowledge of its kernel: the last rendering, and what the kernel holds
    after its last apply (or check that found nothing to do), which it may trust instead of
    reading the kernel again. A failed apply forgets it: the next plan reads."""

    backend: Backend[D, S, W]
    rendered: D | None = None
    trusted: S | None = None
    # called before a planned ruleset that governs traffic between containers is applied
    # (host.bridge_filtering.ensure: bridged traffic must reach the IP hooks); None: never
    before_between: Callable[[], object] | None = None
    _between: bool = False  # the last plan's ruleset governs traffic between containers

    @property
    def name(self) -> str:
        return self.backend.name

    def plan(self, ruleset: Ruleset, fresh: bool = True) -> Transaction[S, W]:
        """fresh=False trusts what the last apply left, where there was one."""
        desired = self.backend.render(ruleset, self.rendered)
        self.rendered = desired
        self._between = ruleset.between_default is not None
        installed = self.trusted if not fresh and self.trusted is not None else None
        tx = self.backend.diff(desired, self.backend.read() if installed is None else installed)
        if not tx.pending:
            self.trusted = tx.after
        return tx

    def apply(self, tx: Transaction[S, W]) -> None:
        if self._between and self.before_between is not None:
            self.before_between()  # (raises BackendError if it can't: nothing written)
        self.trusted = None
        self.backend.apply(tx)
        self.trusted = tx.after

    def plan_remove(self) -> Transaction[S, W]:
        self._between = False
        return self.backend.removal(self.backend.read())

    def distrust_deltas(self) -> bool:
        """Stop writing deltas (from now on changes are worked out whole); False if it
        already had."""
        was, self.backend.deltas = self.backend.deltas, False
        return was

    def installed(self) -> bool:
        """Whether the kernel holds anything of dockwall's. Reads; forgets nothing."""
        return self.plan_remove().pending

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], Sync]:
        return self.backend.decide(ruleset, packets)

    def hits(self) -> dict[str, Hits]:
        """Per rule, both families added up."""
        return by_rule(self.backend.hits())

    def hits_by_family(self) -> FamilyHits:
        return self.backend.hits()
