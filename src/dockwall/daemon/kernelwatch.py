"""Wake the daemon the moment someone changes the filter rules, instead of at the next drift
check: iptables-nft and nft both write through nftables, whose changes `nft monitor` streams.

nft monitor ends each transaction with "# new generation N by process PID (name)": a
transaction of dockwall's own (its process, or one of its latest children) wakes nothing, so
a container start costs no readback of the whole table.

Where there is no `nft` (or the host uses iptables-legacy, which nftables doesn't see) this
does nothing and the timed drift check is the only guard. `nft monitor` runs for as long as
dockwall does, so it has no timeout; it is ended by pid on stop and restarted if it dies.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from dockwall import proc
from dockwall.daemon.triggers import Kind, Trigger, Triggers

log = logging.getLogger(__name__)

# What a line changed: iptables' filter tables, dockwall's table. Not Docker 29's nftables
# tables (`ip docker-bridges`: their chains are "type filter" too), which Docker rewrites on
# every container start and stop and which change nothing of dockwall's.
WATCHED = re.compile(r"\w+ \w+ (?:ip|ip6|inet) (?:filter|dockwall)(?:\s|$)")
GENERATION = re.compile(r"# new generation \d+(?: by process (\d+) \((.*)\))?")


class Transactions:
    """Reads nft monitor's lines, one at a time; says which transactions changed a watched
    table and were not dockwall's own."""

    def __init__(self, ours: Callable[[int], bool]) -> None:
        self._ours = ours
        self._touched = ""  # the first watched line of the transaction being read

    def feed(self, line: str) -> str | None:
        """At the end of a foreign transaction that touched a watched table: what it did
        and who did it; else None."""
        end = GENERATION.match(line)
        if end is None:
            if not self._touched and WATCHED.match(line):
                self._touched = line.strip()[:200]
            return None
        touched, self._touched = self._touched, ""
        pid = None if end.group(1) is None else int(end.group(1))
        if not touched or (pid is not None and self._ours(pid)):
            return None
        return f"{touched} (by process {pid} ({end.group(2)}))" if pid else touched


# nft monitor can end by itself: nftables 1.0.6 (Debian 12) was seen to crash (SIGSEGV, or
# "utils.c:38: Memory allocation failure") while Docker 29's nftables backend and dockwall
# write. It is started again at once, and what changed meanwhile is checked; a monitor that
# keeps dying young is started again after a pause that doubles up to RESTART_PAUSE.
FIRST_PAUSE = 0.05  # seconds
RESTART_PAUSE = 5.0
LIVED_LONG = 2.0  # seconds: a monitor that ran this long restarts after FIRST_PAUSE again
STOP_WAIT = 5.0


class KernelWatch(threading.Thread):
    def __init__(self, triggers: Triggers) -> None:
        super().__init__(name="nft-monitor", daemon=True)
        self._triggers = triggers
        self._stopping = threading.Event()
        self._child: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(STOP_WAIT)

    def run(self) -> None:
        nft = shutil.which("nft")
        if nft is None:
            log.debug("no nft: rule changes are found by the timed drift check only")
            return
        pause, again = FIRST_PAUSE, False
        while not self._stopping.is_set():
            started = time.monotonic()
            self._watch(nft, again)
            young = time.monotonic() - started < LIVED_LONG
            pause = min(pause * 2, RESTART_PAUSE) if young else FIRST_PAUSE
            again = True
            self._stopping.wait(pause)

    def _watch(self, nft: str, again: bool) -> None:
        """Run nft monitor until it ends; again: it ran before, so check what changed while
        it was not there."""
        try:
            self._child = subprocess.Popen(
                [nft, "monitor"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",  # nft 1.0.6 prints stray bytes for some sets: not fatal
            )
        except OSError as exc:
            log.warning("cannot watch rule changes", extra={"fields": {"error": exc}})
            return
        log.debug("watching nftables for rule changes")
        if again:
            what = "nft monitor started again (changes while it was not running are unseen)"
            self._triggers.put(Trigger(Kind.KERNEL_CHANGED, what, time.time()))
        assert self._child.stdout is not None
        transactions = Transactions(proc.ours)
        for line in self._child.stdout:
            if self._stopping.is_set():
                return
            foreign = transactions.feed(line)
            if foreign is not None:
                log.debug("rules changed by someone else", extra={"fields": {"what": foreign}})
                self._triggers.put(Trigger(Kind.KERNEL_CHANGED, foreign, time.time()))
        self._ended(self._child)

    def _ended(self, child: subprocess.Popen[str]) -> None:
        """nft monitor ended by itself: say how, since until it is back only the timed
        drift check guards."""
        code = child.wait()
        error = child.stderr.read().strip()[-300:] if child.stderr else ""
        if not self._stopping.is_set():
            log.warning("nft monitor ended", extra={"fields": {"code": code, "error": error}})
