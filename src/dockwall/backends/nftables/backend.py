"""NftablesBackend: the only code that reads or writes dockwall's nftables table.

How "installed matches wanted" is decided: the table is read back with `nft -j list table
inet dockwall` and normalised (readback.py) into the very shape render.py builds: sets with
their elements, chains with their hook, every rule as canonical fragments. Equal means
nothing to do, so applying the same Ruleset twice writes nothing; a flushed chain or set, an
edited, added or deleted rule or element, or a missing table all differ and are repaired by
replacing the table whole. (Counters and the table's comment are not compared: counters
change with traffic, and nft 1.0.6 leaves table comments out of its JSON.)

The daemon's path costs what changed, not what exists: the Ruleset is rendered by patching
the last rendering (patch.py), diffed against the State its last apply left (trusted, not
read from the kernel), and a change of set elements only is written as a delta over netlink
(netlink.py), without nft, which reads every large interval set before any element update.
If the kernel refuses the delta (someone changed those sets), the table is replaced whole
from the transaction's `after`, in one transaction too. The object keeps no state between
calls (only the netlink socket, kept open because closing one waits on the kernel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from dockwall import proc
from dockwall.backends.base import NOT_HOOKED, FamilyHits, Sync
from dockwall.backends.base import Transaction as BaseTransaction
from dockwall.backends.nftables import (
    lines,
    model,
    netlink,
    patch,
    readback,
    render,
    transaction,
)
from dockwall.backends.nftables.model import FAMILY, NAME, Chain, NftSet, Table
from dockwall.errors import BackendError
from dockwall.host import proxy_sockets
from dockwall.model.packets import Decision, Outcome, Packet
from dockwall.model.ruleset import Ruleset

log = logging.getLogger(__name__)

NFT = "nft"
TIMEOUT = 30.0  # seconds for one listing or transaction
_MISSING = "No such file or directory"  # what nft says when the table is not there


def _writable(ruleset: Ruleset) -> Ruleset:
    """ruleset without its proxy cgroup if that is gone (Docker stopped by systemd): nft
    refuses a rule that names a cgroup it cannot find, and the rest must still be written."""
    where = ruleset.proxy_cgroup
    if where is None or proxy_sockets.exists(where):
        return ruleset
    log.debug("dockerd's cgroup is gone; no rule for docker-proxy's unseen ports")
    return replace(ruleset, proxy_cgroup=None)


@dataclass(frozen=True)
class Rendered:
    """A Ruleset as dockwall's table (and the Ruleset, which the next rendering may patch)."""

    ruleset: Ruleset
    table: Table


@dataclass(frozen=True)
class State:
    """dockwall's table in the kernel; None: there is none. trusted: exactly what dockwall
    itself wrote (not read back), so a change of set elements can be sent as a delta."""

    table: Table | None
    trusted: bool = False


Transaction = BaseTransaction[State, transaction.Writes]


class NftablesBackend:
    name = "nftables"
    writes_streamed = True

    def __init__(self, deltas: bool = True) -> None:
        self.deltas = deltas  # send element-only changes from a trusted state as deltas
        self._netlink = netlink.Writer()

    def read_table(self) -> readback.Installed | None:
        """dockwall's table with counters, or None if there is none."""
        try:
            text = proc.run([NFT, "-j", "list", "table", FAMILY, NAME], timeout=TIMEOUT)
        except BackendError as exc:
            if _MISSING in str(exc):
                return None
            raise
        return readback.parse(text)

    def read(self) -> State:
        found = self.read_table()
        return State(None if found is None else found.table)

    def render(self, ruleset: Ruleset, previous: Rendered | None = None) -> Rendered:
        """render.render(ruleset), patched from previous where only destinations changed.
        (The one look outside: whether dockerd's cgroup still exists, see _writable.)"""
        ruleset = _writable(ruleset)
        table = None if previous is None else patch.patch(previous.ruleset, previous.table, ruleset)
        return Rendered(ruleset, render.render(ruleset) if table is None else table)

    def diff(self, desired: Rendered, installed: State) -> Transaction:
        """From a trusted state, a change of set elements only is a delta (what changed);
        from a state read back, the sets that differ are refilled, or the table replaced."""
        wanted = desired.table
        change = None
        if installed.trusted and installed.table is not None and self.deltas:
            change = transaction.to_update(installed.table, wanted)
        if change is None:
            change = transaction.to_apply(installed.table, wanted)
        return Transaction(change, installed, State(wanted, trusted=True))

    def removal(self, installed: State) -> Transaction:
        return Transaction(transaction.to_remove(installed.table), installed, State(None, True))

    def apply(self, tx: Transaction) -> None:
        """One transaction for the whole table (both families): all of it changes, or nothing.
        A delta goes over netlink, anything else to `nft -f`."""
        writes = tx.change.writes
        if not writes.pending:
            return
        planned = None if tx.after is None else tx.after.table
        try:
            if writes.delta is not None and planned is not None:
                self._write(writes.delta, planned)
            else:
                proc.run([NFT, "-f", "-"], stdin=writes.script, timeout=TIMEOUT)
        except BackendError as exc:
            raise BackendError(f"{exc}; nothing was changed") from None

    def _write(self, changes: tuple[netlink.SetChange, ...], planned: Table) -> None:
        """Write a delta; if the kernel refuses it, replace the table whole with planned."""
        try:
            self._netlink.write(NAME, changes, TIMEOUT)
        except netlink.Unsupported:
            proc.run([NFT, "-f", "-"], stdin=transaction.delta(changes), timeout=TIMEOUT)
        except BackendError as exc:
            log.warning(
                "the sets were not what dockwall last wrote; replacing its table whole",
                extra={"fields": {"error": exc}},
            )
            proc.run([NFT, "-f", "-"], stdin=model.transaction(planned), timeout=TIMEOUT)

    def hits(self) -> FamilyHits:
        installed = self.read_table()
        return {} if installed is None else readback.hits(installed)

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], Sync]:
        """What ruleset does with each packet (dockwall.compile.decide; lines.py names the rule
        line of the rendering that does it), and where the kernel's table differs from that
        rendering.

        The installed rules are not walked: where the table differs from ruleset's rendering
        (drift, or a policy not applied yet) the answer is still ruleset's, not the kernel's;
        the differences say so. Without a table: NOT_INSTALLED."""
        installed = self.read_table()
        wanted = render.render(_writable(ruleset))
        if installed is None:
            return [Decision(Outcome.NOT_INSTALLED, "", "", None) for _ in packets], NOT_HOOKED
        decided = [lines.decision(ruleset, wanted, p) for p in packets]
        return decided, Sync(differences(installed.table, wanted))


def differences(installed: Table, wanted: Table) -> tuple[str, ...]:
    """The chains and sets of wanted that installed lacks or holds otherwise, then what
    installed has that dockwall never makes."""

    def by_name(items: tuple[Chain, ...] | tuple[NftSet, ...]) -> dict[str, object]:
        return {item.name: item for item in items}

    found: list[str] = []
    for kind, have, want in (
        ("chain", by_name(installed.chains), by_name(wanted.chains)),
        ("set", by_name(installed.sets), by_name(wanted.sets)),
    ):
        names = sorted(set(have) | set(want))
        found += [f"{kind} {n}" for n in names if have.get(n) != want.get(n)]
    return (*found, *(f"not dockwall's: {e}" for e in installed.extras))
