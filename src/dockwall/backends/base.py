"""What every backend offers. The CLI and daemon only speak to this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dockwall.packets import Decision, Packet
from dockwall.ruleset import Ruleset
from dockwall.values import Family


@dataclass(frozen=True)
class FamilyChange:
    """What one kernel write for one address family would do."""

    family: Family
    payload: str  # the whole transaction in the backend's input language; "" if nothing to do
    added: tuple[str, ...] = ()  # rule lines that appear, for `plan`
    removed: tuple[str, ...] = ()  # rule lines that go
    hook: str = ""  # what the hook into Docker's rules does, e.g. "insert jump in DOCKER-USER"
    undo: str = ""  # the transaction that puts back what was there, if another family fails

    @property
    def pending(self) -> bool:
        return bool(self.payload)


@dataclass(frozen=True)
class Change:
    families: tuple[FamilyChange, ...]
    # Steps a backend takes around the family transactions (the iptables backend: ipsets),
    # in its own input language; "" if none.
    prepare: str = ""  # before: nothing the installed rules use changes
    commit: str = ""  # after all families succeeded
    abort: str = ""  # after a family failed: undo prepare

    @property
    def pending(self) -> bool:
        return bool(self.prepare or self.commit) or any(f.pending for f in self.families)


@dataclass(frozen=True)
class Hits:
    packets: int
    bytes: int


DEFAULT_HITS = "(default)"  # key of the default verdict's counter in Backend.hits()


class Backend(Protocol):
    name: str

    def hits(self) -> dict[str, Hits]:
        """Packets and bytes each policy rule let through (by rule name), and DEFAULT_HITS."""
        ...

    def plan(self, ruleset: Ruleset, fresh: bool = True) -> Change:
        """Work out what makes the kernel match ruleset. Writes nothing. fresh=False may trust
        what this backend object itself last applied instead of reading the kernel again (the
        daemon, between its drift checks)."""
        ...

    def plan_remove(self) -> Change:
        """Read the kernel and work out what removes everything dockwall installed."""
        ...

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], bool]:
        """Follow packets through the installed rules; also say whether those rules match
        ruleset (if not: drift, or a policy changed but not applied)."""
        ...

    def apply(self, change: Change) -> None:
        """Carry out a change: one transaction per family that has something to do."""
        ...
