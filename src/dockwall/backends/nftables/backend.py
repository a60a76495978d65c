"""NftablesBackend: the only code that reads or writes dockwall's nftables table.

How "installed matches wanted" is decided: the table is read back with `nft -j list table
inet dockwall` and normalised (readback.py) into the very shape render.py builds: sets with
their elements, chains with their hook, every rule as canonical fragments. Equal means
nothing to do, so applying the same Ruleset twice writes nothing; a flushed chain or set, an
edited, added or deleted rule or element, or a missing table all differ and are repaired by
replacing the table whole. (Counters and the table's comment are not compared: counters
change with traffic, and nft 1.0.6 leaves table comments out of its JSON.)

The daemon's path (plan with fresh=False) costs what changed, not what exists: the Ruleset is
rendered by patching the last rendering (patch.py), compared with what this object last wrote
without reading the kernel, and a change of set elements only is written as a delta over
netlink (netlink.py), without nft, which reads every large interval set before any element
update. If the kernel refuses the delta (someone changed those sets), the table is replaced
whole from what was planned, in one transaction too.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from dockwall import proc, proxycgroup
from dockwall.backends.base import Change, Hits
from dockwall.backends.nftables import (
    evaluate,
    model,
    netlink,
    patch,
    readback,
    render,
    transaction,
)
from dockwall.backends.nftables.model import FAMILY, NAME, Table
from dockwall.errors import BackendError
from dockwall.packets import Decision, Outcome, Packet
from dockwall.ruleset import Ruleset

log = logging.getLogger(__name__)

NFT = "nft"
TIMEOUT = 30.0  # seconds for one listing or transaction
_MISSING = "No such file or directory"  # what nft says when the table is not there


def _writable(ruleset: Ruleset) -> Ruleset:
    """ruleset without its proxy cgroup if that is gone (Docker stopped by systemd): nft
    refuses a rule that names a cgroup it cannot find, and the rest must still be written."""
    where = ruleset.proxy_cgroup
    if where is None or proxycgroup.exists(where):
        return ruleset
    log.debug("dockerd's cgroup is gone; no rule for docker-proxy's unseen ports")
    return replace(ruleset, proxy_cgroup=None)


class NftablesBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._known: Table | None = None  # what the kernel holds after our last write or check
        self._planned: Table | None = None  # what the last plan would leave there
        self._delta: tuple[str, list[netlink.SetChange]] | None = None  # the last plan's delta
        self._rendered: tuple[Ruleset, Table] | None = None  # the last rendering
        self._netlink = netlink.Writer()

    def read(self) -> readback.Installed | None:
        """dockwall's table with counters, or None if there is none."""
        try:
            text = proc.run([NFT, "-j", "list", "table", FAMILY, NAME], timeout=TIMEOUT)
        except BackendError as exc:
            if _MISSING in str(exc):
                return None
            raise
        return readback.parse(text)

    def plan(self, ruleset: Ruleset, fresh: bool = True) -> Change:
        """fresh=False trusts what this object last applied (or found in sync) instead of
        reading the kernel again, when it knows that."""
        wanted = self._render(_writable(ruleset))
        trusted = not fresh and self._known is not None
        if trusted:
            installed: Table | None = self._known
        else:
            found = self.read()
            installed = None if found is None else found.table
        update = None
        if trusted and installed is not None:
            update = transaction.to_update(installed, wanted)
        change = transaction.to_apply(installed, wanted) if update is None else update[0]
        self._planned = wanted
        self._delta = None if update is None else (transaction.delta(update[1]), update[1])
        if not change.pending:
            self._known = wanted
        return change

    def _render(self, ruleset: Ruleset) -> Table:
        """render.render(ruleset), patched from the last rendering where only destinations
        changed."""
        last = self._rendered
        wanted = None if last is None else patch.patch(last[0], last[1], ruleset)
        if wanted is None:
            wanted = render.render(ruleset)
        self._rendered = (ruleset, wanted)
        return wanted

    def plan_remove(self) -> Change:
        self._planned, self._delta = None, None  # after a removal nothing of ours is there
        installed = self.read()
        return transaction.to_remove(None if installed is None else installed.table)

    def apply(self, change: Change) -> None:
        """One transaction for the whole table (both families): all of it changes, or nothing.
        The delta of this object's last plan goes over netlink, anything else to `nft -f`."""
        payloads = list(dict.fromkeys(f.payload for f in change.families if f.pending))
        if not payloads:
            return
        if len(payloads) > 1:
            raise BackendError("the families of an nftables change disagree; nothing was changed")
        delta, planned = self._delta, self._planned
        try:
            if delta is not None and planned is not None and payloads[0] == delta[0]:
                self._write(delta[1], planned)
            else:
                proc.run([NFT, "-f", "-"], stdin=payloads[0], timeout=TIMEOUT)
        except BackendError as exc:
            self._known = None
            raise BackendError(f"{exc}; nothing was changed") from None
        self._known, self._planned, self._delta = planned, None, None

    def _write(self, changes: list[netlink.SetChange], planned: Table) -> None:
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

    def hits(self) -> dict[str, Hits]:
        installed = self.read()
        return {} if installed is None else readback.hits(installed)

    def decide(self, ruleset: Ruleset, packets: list[Packet]) -> tuple[list[Decision], bool]:
        """What ruleset does with each packet (dockwall.decide; evaluate.py names the rule
        line of the rendering that does it), and whether the kernel holds that rendering.

        The installed rules are not walked: where the table differs from ruleset's rendering
        (drift, or a policy not applied yet) the answer is still ruleset's, not the kernel's;
        in_sync False says so. Without a table: NOT_INSTALLED, and not in sync."""
        installed = self.read()
        wanted = render.render(_writable(ruleset))
        if installed is None:
            return [Decision(Outcome.NOT_INSTALLED, "", "", None) for _ in packets], False
        decided = [evaluate.evaluate(ruleset, wanted, p) for p in packets]
        return decided, installed.table == wanted
