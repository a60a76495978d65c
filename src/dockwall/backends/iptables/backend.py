"""IptablesBackend: the only code that reads or writes iptables/ip6tables."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace

from dockwall import proc
from dockwall.backends.base import Change, FamilyChange, Hits
from dockwall.backends.iptables import classes, evaluate, ipsets, render, saved, transaction
from dockwall.errors import BackendError
from dockwall.packets import Decision, Outcome, Packet
from dockwall.ruleset import Ruleset
from dockwall.values import Family

FAMILIES = (Family.V4, Family.V6)
TIMEOUT = 30.0  # seconds for one save or restore
WAIT = "5"  # seconds to wait for the xtables lock
IPSET = "ipset"


@dataclass(frozen=True)
class Tools:
    save: str
    restore: str


TOOLS = {
    Family.V4: Tools("iptables-save", "iptables-restore"),
    Family.V6: Tools("ip6tables-save", "ip6tables-restore"),
}


NO_IPSET = (
    "the iptables backend keeps container addresses and large groups in ipsets, and the "
    "ipset tool is missing: install it (apt-get install ipset) or use --backend nftables"
)


@dataclass(frozen=True)
class Planned:
    """What the kernel will hold once the last plan is applied."""

    chains: dict[Family, saved.Saved]
    sets: ipsets.Sets
    classes: classes.Index


def _with_moves(change: FamilyChange, installed: ipsets.Sets, want: ipsets.Sets) -> FamilyChange:
    """change, its lines for people extended with the class members that come and go."""
    added, removed = ipsets.class_moves(installed, want).lines()
    return replace(change, added=change.added + added, removed=change.removed + removed)


class IptablesBackend:
    name = "iptables"

    def __init__(self, families: tuple[Family, ...] = FAMILIES) -> None:
        self.families = families
        self._known: dict[Family, saved.Saved] = {}  # what the kernel holds after our apply
        self._known_sets: ipsets.Sets | None = None
        self._classes: classes.Index | None = None  # the classes of the last Ruleset applied
        self._planned: Planned | None = None

    def read(self, family: Family) -> saved.Saved:
        """The filter table of one family, with counters."""
        text = proc.run([TOOLS[family].save, "-c", "-t", "filter"], timeout=TIMEOUT)
        return saved.parse(text)

    def read_sets(self) -> ipsets.Sets:
        """dockwall's ipsets; none if the ipset tool is missing (then no rule can use one)."""
        if shutil.which(IPSET) is None:
            return {}
        return ipsets.parse(proc.run([IPSET, "save"], timeout=TIMEOUT))

    def plan(self, ruleset: Ruleset, fresh: bool = True) -> Change:
        trusted = not fresh and len(self._known) == len(self.families)
        if trusted and self._known_sets is not None and self._classes is not None:
            moved = classes.moves(self._classes, ruleset)
            if moved is not None:  # only containers came, went or changed class
                return self._plan_moves(self._known_sets, *moved)
        state = {f: self._known[f] if trusted else self.read(f) for f in self.families}
        narrowed = {f: ruleset.in_family(f) for f in self.families}
        wanted = {f: render.render(f, narrowed[f]) for f in self.families}
        want = {f: ipsets.wanted(f, narrowed[f]) for f in self.families}
        used = any(
            "--match-set" in spec for s in state.values() for c in s.chains.values() for spec in c
        )
        if trusted and self._known_sets is not None:
            installed = self._known_sets
        else:
            installed = self.read_sets() if any(want.values()) or used else {}
        if any(want.values()) and shutil.which(IPSET) is None:
            raise BackendError(NO_IPSET)
        families = tuple(
            _with_moves(transaction.to_apply(f, state[f], wanted[f]), installed, want[f])
            for f in self.families
        )
        steps = ipsets.steps(installed, want)
        after = {f: transaction.after(state[f], wanted[f]) for f in self.families}
        sets = {n: m for one in want.values() for n, m in one.items()}
        self._planned = Planned(after, sets, classes.index(ruleset, narrowed))
        change = Change(families, steps.prepare, steps.commit, steps.abort)
        if not change.pending:
            self._remember()
        return change

    def _plan_moves(
        self, sets: ipsets.Sets, index: classes.Index, found: dict[Family, list[classes.Move]]
    ) -> Change:
        """The change where only class members move: set elements, no rule (classes.py)."""
        sets, moves = dict(sets), ipsets.Moves()
        families = []
        for family in self.families:
            mine = ipsets.Moves()
            for move in found.get(family, []):
                old = ipsets.class_set(family, move.old) if move.old else None
                new = ipsets.class_set(family, move.new) if move.new else None
                if old is not None:
                    sets[old] = sets[old] - {move.address}
                    mine.deleted.append(f"{old} {move.address}")
                if new is not None:
                    sets[new] = sets[new] | {move.address}
                    mine.added.append(f"{new} {move.address}")
            moves.deleted += mine.deleted
            moves.added += mine.added
            families.append(FamilyChange(family, "", *mine.lines()))
        self._planned = Planned(dict(self._known), sets, index)
        forward, back = ipsets.text(moves.forward()), ipsets.text(moves.back())
        change = Change(tuple(families), forward, "", back)
        if not change.pending:
            self._remember()
        return change

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], bool]:
        """Each packet followed through the installed chains and ipsets, as the kernel would
        (evaluate.py), whatever ruleset says; and whether they are ruleset's rendering. Where
        they are, the walk gives what dockwall.decide gives (tests/unit/test_decide.py holds
        the rendering to it). Without our chains or their hook: NOT_INSTALLED, and not in
        sync (as NftablesBackend.decide)."""
        families = {Family.of(p.source) for p in packets}
        state = {f: self.read(f) for f in families}
        installed = {f: s.chains for f, s in state.items()}
        in_sync = all(installed[f] == render.render(f, ruleset.in_family(f)) for f in families)
        hooked = all(transaction.hook_ok(s) for s in state.values())
        if not (hooked and all(installed.values())):
            return [Decision(Outcome.NOT_INSTALLED, "", "", None) for _ in packets], False
        sets = self.read_sets()
        in_sync = in_sync and all(
            sets.get(n) == m
            for f in families
            for n, m in ipsets.wanted(f, ruleset.in_family(f)).items()
        )
        decided = [evaluate.evaluate(installed[Family.of(p.source)], p, sets) for p in packets]
        return decided, in_sync

    def plan_remove(self) -> Change:
        self._planned = None  # after a removal nothing of ours is known to be there
        self._classes = None
        families = tuple(transaction.to_remove(f, self.read(f)) for f in self.families)
        return Change(families, commit=ipsets.remove_all(self.read_sets()))

    def apply(self, change: Change) -> None:
        """One restore per family that has something to do, side by side. If one family's
        transaction is refused, the others are put back: all families change, or none."""
        if change.prepare:
            self._ipset(change.prepare, on_error=change.abort)
        pending = [f for f in change.families if f.pending]
        errors = proc.run_all([(self._restore(f.family), f.payload) for f in pending], TIMEOUT)
        if not any(errors):
            if change.commit:
                self._ipset(change.commit)
            self._remember()
            return
        self._known, self._known_sets, self._classes = {}, None, None
        if change.abort:
            self._ipset(change.abort, check=False)
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

    def _remember(self) -> None:
        """The last plan is what the kernel holds now (applied, or nothing to do)."""
        if self._planned is None:
            self._known, self._known_sets, self._classes = {}, None, None
        else:
            self._known = dict(self._planned.chains)
            self._known_sets, self._classes = self._planned.sets, self._planned.classes
        self._planned = None

    @staticmethod
    def _ipset(commands: str, on_error: str = "", check: bool = True) -> None:
        """One `ipset restore` (-exist: re-creating or destroying twice is no error)."""
        try:
            proc.run([IPSET, "-exist", "restore"], stdin=commands, timeout=TIMEOUT)
        except BackendError:
            if on_error:
                proc.run_all([([IPSET, "-exist", "restore"], on_error)], TIMEOUT)
            if check:
                raise

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
