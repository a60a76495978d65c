"""IptablesBackend: the only code that reads or writes iptables/ip6tables."""

from __future__ import annotations

from dataclasses import dataclass

from dockwall import proc
from dockwall.backends.base import Change, FamilyChange, Hits
from dockwall.backends.iptables import evaluate, render, saved, transaction
from dockwall.errors import BackendError
from dockwall.packets import Decision, Outcome, Packet
from dockwall.ruleset import Ruleset
from dockwall.values import Family

FAMILIES = (Family.V4, Family.V6)
TIMEOUT = 30.0  # seconds for one save or restore
WAIT = "5"  # seconds to wait for the xtables lock


@dataclass(frozen=True)
class Tools:
    save: str
    restore: str


TOOLS = {
    Family.V4: Tools("iptables-save", "iptables-restore"),
    Family.V6: Tools("ip6tables-save", "ip6tables-restore"),
}


class IptablesBackend:
    name = "iptables"

    def __init__(self, families: tuple[Family, ...] = FAMILIES) -> None:
        self.families = families

    def read(self, family: Family) -> saved.Saved:
        """The filter table of one family, with counters."""
        text = proc.run([TOOLS[family].save, "-c", "-t", "filter"], timeout=TIMEOUT)
        return saved.parse(text)

    def plan(self, ruleset: Ruleset) -> Change:
        return Change(tuple(self._plan_family(f, ruleset) for f in self.families))

    def _plan_family(self, family: Family, ruleset: Ruleset) -> FamilyChange:
        wanted = render.render(family, ruleset.in_family(family))
        return transaction.to_apply(family, self.read(family), wanted)

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], bool]:
        families = {Family.of(p.source) for p in packets}
        installed = {f: self.read(f).chains for f in families}
        in_sync = all(installed[f] == render.render(f, ruleset.in_family(f)) for f in families)
        if not all(installed.values()):
            return [Decision(Outcome.NOT_INSTALLED, "", "", None) for _ in packets], in_sync
        decided = [evaluate.evaluate(installed[Family.of(p.source)], p) for p in packets]
        return decided, in_sync

    def plan_remove(self) -> Change:
        return Change(tuple(transaction.to_remove(f, self.read(f)) for f in self.families))

    def apply(self, change: Change) -> None:
        """One restore per family that has something to do, side by side. If one family's
        transaction is refused, the others are put back: all families change, or none."""
        pending = [f for f in change.families if f.pending]
        errors = proc.run_all([(self._restore(f.family), f.payload) for f in pending], TIMEOUT)
        if not any(errors):
            return
        undo = [
            (self._restore(f.family), f.undo)
            for f, e in zip(pending, errors, strict=True)
            if not e and f.undo
        ]
        undo_errors = [e for e in proc.run_all(undo, TIMEOUT) if e]
        message = "; ".join(e for e in errors if e)
        if undo_errors:
            message += "; and putting back the other family failed: " + "; ".join(undo_errors)
        raise BackendError(message + ("" if undo_errors else "; nothing was changed"))

    @staticmethod
    def _restore(family: Family) -> list[str]:
        return [TOOLS[family].restore, "-w", WAIT, "--noflush"]

    def hits(self) -> dict[str, Hits]:
        totals: dict[str, Hits] = {}
        for family in self.families:
            for key, hit in saved.hits(self.read(family)).items():
                old = totals.get(key, Hits(0, 0))
                totals[key] = Hits(old.packets + hit.packets, old.bytes + hit.bytes)
        return totals
