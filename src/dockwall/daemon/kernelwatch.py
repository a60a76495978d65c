"""Wake the daemon the moment someone changes the filter rules, instead of at the next drift
check: iptables-nft and nft both write through nftables, whose changes `nft monitor` streams.

Where there is no `nft` (or the host uses iptables-legacy, which nftables doesn't see) this
does nothing and the timed drift check is the only guard. `nft monitor` runs for as long as
dockwall does, so it has no timeout; it is ended by pid on stop and restarted if it dies.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

from dockwall.daemon.triggers import Kind, Trigger, Triggers

log = logging.getLogger(__name__)

WATCHED = (" filter ", " dockwall ")  # iptables' filter tables and dockwall's nftables table
RESTART_PAUSE = 5.0  # seconds before starting nft monitor again if it ended
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
        while not self._stopping.is_set():
            self._watch(nft)
            self._stopping.wait(RESTART_PAUSE)

    def _watch(self, nft: str) -> None:
        try:
            self._child = subprocess.Popen(
                [nft, "monitor"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError as exc:
            log.warning("cannot watch rule changes", extra={"fields": {"error": exc}})
            return
        log.debug("watching nftables for rule changes")
        assert self._child.stdout is not None
        for line in self._child.stdout:
            if self._stopping.is_set():
                return
            if any(word in line for word in WATCHED):
                self._triggers.put(Trigger(Kind.KERNEL_CHANGED, line.strip()[:200], time.time()))
        self._child.wait()
