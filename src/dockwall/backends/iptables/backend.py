"""IptablesBackend: the only code that reads or writes iptables/ip6tables."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass, replace

from dockwall import proc
from dockwall.backends.base import NOT_HOOKED, Change, FamilyChange, FamilyHits, Sync
from dockwall.backends.base import Transaction as BaseTransaction
from dockwall.backends.iptables import classes, ipsets, lines, render, saved, transaction
from dockwall.errors import BackendError
from dockwall.model.packets import Decision, Outcome, Packet
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Family

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
class State:
    """dockwall's part of the kernel: each family's filter table, dockwall's ipsets, whether
    the ipset tool is there; and the destination classes where dockwall itself wrote this
    state (trusted, not read back): then a container that only changes class is a set move."""

    chains: dict[Family, saved.Saved]
    sets: ipsets.Sets
    ipset: bool = True
    classes: classes.Index | None = None


@dataclass(frozen=True)
class Rendered:
    """A Ruleset for iptables: per family, its narrowing, chains and ipsets (worked out when
    first needed: a container moving class needs none of them)."""

    ruleset: Ruleset
    families: tuple[Family, ...]

    @functools.cached_property
    def narrowed(self) -> dict[Family, Ruleset]:
        return {f: self.ruleset.in_family(f) for f in self.families}

    @functools.cached_property
    def chains(self) -> dict[Family, render.Chains]:
        return {f: render.render(f, self.narrowed[f]) for f in self.families}

    @functools.cached_property
    def sets(self) -> dict[Family, ipsets.Sets]:
        return {f: ipsets.wanted(f, self.narrowed[f]) for f in self.families}


NO_STEPS = ipsets.Steps()


@dataclass(frozen=True)
class Writes:
    """One iptables-restore per family, and the ipset steps around them (ipsets.Steps)."""

    restores: tuple[transaction.Restore, ...]
    sets: ipsets.Steps = NO_STEPS

    @property
    def pending(self) -> bool:
        return bool(self.sets.prepare or self.sets.commit) or any(r.pending for r in self.restores)


Transaction = BaseTransaction[State, Writes]


def _shown(restore: transaction.Restore, installed: ipsets.Sets, want: ipsets.Sets) -> FamilyChange:
    """restore for people, with the class members that come and go beside its rules."""
    return restore.shown(*ipsets.class_moves(installed, want).lines())


class IptablesBackend:
    name = "iptables"
    writes_streamed = False  # not with iptables-legacy, which nftables does not see

    def __init__(self, families: tuple[Family, ...] = FAMILIES, deltas: bool = True) -> None:
        self.families = families
        self.deltas = deltas  # from a trusted state, a container changing class is a set move

    def read_family(self, family: Family) -> saved.Saved:
        """The filter table of one family, with counters."""
        text = proc.run([TOOLS[family].save, "-c", "-t", "filter"], timeout=TIMEOUT)
        return saved.parse(text)

    def read_sets(self) -> ipsets.Sets:
        """dockwall's ipsets; none if the ipset tool is missing (then no rule can use one)."""
        if shutil.which(IPSET) is None:
            return {}
        return ipsets.parse(proc.run([IPSET, "save"], timeout=TIMEOUT))

    def read(self) -> State:
        chains = {f: self.read_family(f) for f in self.families}
        return State(chains, self.read_sets(), shutil.which(IPSET) is not None)

    def render(self, ruleset: Ruleset, previous: Rendered | None = None) -> Rendered:
        return Rendered(ruleset, self.families)

    def diff(self, desired: Rendered, installed: State) -> Transaction:
        ruleset = desired.ruleset
        if installed.classes is not None and self.deltas:
            moved = classes.moves(installed.classes, ruleset)
            if moved is not None:  # only containers came, went or changed class
                return self._moves(installed, *moved)
        state, wanted, want = installed.chains, desired.chains, desired.sets
        used = any(
            "--match-set" in spec for s in state.values() for c in s.chains.values() for spec in c
        )
        sets = installed.sets if any(want.values()) or used else {}
        if any(want.values()) and not installed.ipset:
            raise BackendError(NO_IPSET)
        restores = tuple(transaction.to_apply(f, state[f], wanted[f]) for f in self.families)
        families = tuple(_shown(r, sets, want[r.family]) for r in restores)
        after = State(
            {f: transaction.after(state[f], wanted[f]) for f in self.families},
            {n: m for one in want.values() for n, m in one.items()},
            installed.ipset,
            classes.index(ruleset, desired.narrowed),
        )
        change = Change(families, Writes(restores, ipsets.steps(sets, want)))
        return Transaction(change, installed, after)

    def _moves(
        self, installed: State, index: classes.Index, found: dict[Family, list[classes.Move]]
    ) -> Transaction:
        """The change where only class members move: set elements, no rule (classes.py)."""
        sets, moves = dict(installed.sets), ipsets.Moves()
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
            families.append(transaction.Restore(family, "").shown(*mine.lines()))
        steps = ipsets.Steps(ipsets.text(moves.forward()), "", ipsets.text(moves.back()))
        restores = tuple(transaction.Restore(f, "") for f in self.families)
        change = Change(tuple(families), Writes(restores, steps), delta=True)
        after = replace(installed, sets=sets, classes=index)
        return Transaction(change, installed, after)

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], Sync]:
        """What ruleset does with each packet (dockwall.compile.decide; lines.py names the line
        of the rendering that does it), and where the kernel's chains and ipsets differ from
        that rendering. The installed rules are not walked: under drift, or with a policy not
        applied yet, the answer is still ruleset's and the differences say so. Without our
        chains or their hook: NOT_INSTALLED (as NftablesBackend.decide)."""
        families = sorted({Family.of(p.source) for p in packets})
        state = {f: self.read_family(f) for f in families}
        if not all(s.chains and transaction.hook_ok(s) for s in state.values()):
            return [Decision(Outcome.NOT_INSTALLED, "", "", None) for _ in packets], NOT_HOOKED
        narrowed = {f: ruleset.in_family(f) for f in families}
        wanted = {f: render.render(f, narrowed[f]) for f in families}
        sets = self.read_sets()
        differs = [
            f"{f.value} chain {name}"
            for f in families
            for name in sorted(set(wanted[f]) | set(state[f].chains))
            if wanted[f].get(name) != state[f].chains.get(name)
        ]
        differs += [
            f"ipset {name}"
            for f in families
            for name, members in sorted(ipsets.wanted(f, narrowed[f]).items())
            if sets.get(name) != members
        ]
        decided = [lines.decision(ruleset, wanted[Family.of(p.source)], p) for p in packets]
        return decided, Sync(tuple(differs))

    def removal(self, installed: State) -> Transaction:
        """What takes out dockwall's chains, jumps and ipsets; after it, what the kernel holds
        is not known (Docker's rules are not dockwall's to model): the next plan reads."""
        restores = tuple(transaction.to_remove(f, installed.chains[f]) for f in self.families)
        steps = ipsets.Steps(commit=ipsets.remove_all(installed.sets))
        change = Change(tuple(r.shown() for r in restores), Writes(restores, steps))
        return Transaction(change, installed, None)

    def apply(self, tx: Transaction) -> None:
        """One restore per family that has something to do, side by side. If one family's
        transaction is refused, the others are put back: all families change, or none."""
        writes = tx.change.writes
        sets = writes.sets
        if sets.prepare:
            self._ipset(sets.prepare, on_error=sets.abort)
        pending = [r for r in writes.restores if r.pending]
        errors = proc.run_all([(self._restore(r.family), r.payload) for r in pending], TIMEOUT)
        if not any(errors):
            if sets.commit:
                self._ipset(sets.commit)
            return
        if sets.abort:
            self._ipset(sets.abort, check=False)
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

    def hits(self) -> FamilyHits:
        return {
            (key, family): hit
            for family in self.families
            for key, hit in saved.hits(self.read_family(family)).items()
        }
