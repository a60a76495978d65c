"""Wake the daemon the moment someone changes the filter rules, instead of at the next drift
check: iptables-nft and nft both write through nftables, whose changes the kernel streams
(read by rule_changes.py, in the words of `nft monitor`).

Each transaction ends with "# new generation N by process PID (name)": a transaction of
dockwall's own (its process, or one of its latest children) wakes nothing, nor does one of
Docker's that only writes its own chains behind dockwall's jumps (AFTER_DOCKWALL), so a
container start costs no readback of the whole table.

On a host using iptables-legacy (which nftables doesn't see), or where the stream can't be
subscribed to, the timed drift check is the only guard.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from collections.abc import Callable

from dockwall import proc
from dockwall.daemon import rule_changes
from dockwall.daemon.triggers import Kind, Trigger, Triggers

log = logging.getLogger(__name__)

# What a line changed: iptables' filter tables, dockwall's table. Not Docker 29's nftables
# tables (`ip docker-bridges`: their chains are "type filter" too), which Docker rewrites on
# every container start and stop and which change nothing of dockwall's.
WATCHED = re.compile(r"\w+ \w+ (?:ip|ip6|inet) (?:filter|dockwall)(?:\s|$)")
# Docker's own chains in iptables' filter table, which traffic reaches only after dockwall's
# jumps at the top of FORWARD and DOCKER-USER (and never on INPUT): what Docker writes there
# at every container start and stop (a published port's rule in DOCKER) can't lead traffic
# around dockwall's chains, so it asks for no readback of the whole ruleset. A transaction
# that also touches anything else still wakes the daemon.
AFTER_DOCKWALL = re.compile(
    r"\w+ (?:rule|chain) (?:ip|ip6) filter (?:DOCKER|DOCKER-FORWARD|DOCKER-BRIDGE|DOCKER-CT"
    r"|DOCKER-ISOLATION-STAGE-1|DOCKER-ISOLATION-STAGE-2)(?:\s|$)"
)
GENERATION = re.compile(r"# new generation (\d+)(?: by process (\d+) \((.*)\))?")


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
            if not self._touched and WATCHED.match(line) and not AFTER_DOCKWALL.match(line):
                self._touched = line.strip()[:200]
            return None
        touched, self._touched = self._touched, ""
        pid = None if end.group(2) is None else int(end.group(2))
        if not touched or (pid is not None and self._ours(pid)):
            return None
        return f"{touched} (by process {pid} ({end.group(3)}))" if pid else touched


STOP_POLL = 0.2  # seconds: how often a waiting receive looks whether to stop
RETRY_PAUSE = 1.0  # seconds before subscribing again after the socket failed


class KernelWatch(threading.Thread):
    """Reads nftables' change stream (rule_changes.py) and puts a KERNEL_CHANGED trigger for
    every foreign transaction on a watched table. Where the kernel dropped messages (the
    receive buffer overflowed), it cannot know what changed: a check is asked for."""

    def __init__(self, triggers: Triggers) -> None:
        super().__init__(name="nft-events", daemon=True)
        self._triggers = triggers
        self._stopping = threading.Event()
        # (epoch, generation) of the last transaction read; a new epoch begins at each
        # subscription and after messages were dropped. Read by the daemon's thread.
        self.seen: tuple[int, int] | None = None
        self._epoch = 0

    def mark(self) -> tuple[int, int] | None:
        """(epoch, the kernel's generation now), taken before a full read of the rules;
        None if the stream is not followed or the generation can't be asked."""
        epoch = self._epoch
        if not epoch or not self.is_alive():
            return None
        try:
            return epoch, rule_changes.generation()
        except OSError:
            return None

    def vouches(self, since: tuple[int, int] | None) -> bool:
        """Whether the rules can have changed since `since` (a mark taken before a read)
        only by transactions this watch has read and told of if foreign: in the same epoch
        (subscribed before the mark), the kernel's generation is the mark's (nothing since)
        or the last one read (each read in turn; a foreign one was put as a trigger before
        seen moved on)."""
        if since is None or not self.is_alive() or since[0] != self._epoch:
            return False
        try:
            now = rule_changes.generation()
        except OSError:
            return False
        return now == since[1] or self.seen == (since[0], now)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        again = False
        while not self._stopping.is_set():
            try:
                sock = rule_changes.subscribe()
            except OSError as exc:
                log.warning(
                    "cannot follow nftables' changes; only the timed drift check guards",
                    extra={"fields": {"error": exc}},
                )
                return
            with sock:
                self._epoch += 1
                self.seen = None
                sock.settimeout(STOP_POLL)
                log.debug("watching nftables for rule changes")
                if again:  # what changed while no socket listened is unknown
                    self._put("nftables' change stream subscribed again")
                self._watch(sock)
            again = True
            self._stopping.wait(RETRY_PAUSE)

    def _watch(self, sock: socket.socket) -> None:
        transactions = Transactions(proc.ours)
        while not self._stopping.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # messages were dropped: check
                    self._epoch += 1
                    self.seen = None
                    transactions = Transactions(proc.ours)
                    self._put("nftables' change stream overflowed")
                    continue
                log.warning("nftables' change stream failed", extra={"fields": {"error": exc}})
                return
            for line in rule_changes.lines(data):
                foreign = transactions.feed(line)
                if foreign is not None:
                    log.debug("rules changed by someone else", extra={"fields": {"what": foreign}})
                    self._put(foreign)
                end = GENERATION.match(line)
                if end is not None:
                    self.seen = (self._epoch, int(end.group(1)))

    def _put(self, what: str) -> None:
        self._triggers.put(Trigger(Kind.KERNEL_CHANGED, what, time.time()))
