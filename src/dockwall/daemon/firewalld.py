"""Listen for firewalld's `Reloaded` signal on the system D-Bus: a reload flushes
DOCKER-USER, so check at once rather than at the next drift check.

Where there is no system bus (or no firewalld), this quietly does nothing: the drift check
still catches the flush. jeepney is a small, pure-Python D-Bus library.
"""

from __future__ import annotations

import logging
import threading
import time

from jeepney import MatchRule, message_bus
from jeepney.io.blocking import open_dbus_connection

from dockwall.daemon.triggers import Kind, Trigger, Triggers
from dockwall.logfmt import FIELDS

log = logging.getLogger(__name__)

INTERFACE = "org.fedoraproject.FirewallD1"
RETRY = 30.0  # seconds between attempts to reach the system bus
CALL_TIMEOUT = 5.0


class FirewalldListener(threading.Thread):
    def __init__(self, triggers: Triggers) -> None:
        super().__init__(name="firewalld-signals", daemon=True)
        self._triggers = triggers
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except (OSError, ValueError, KeyError, TimeoutError) as exc:
                log.debug("no system D-Bus for firewalld signals", extra={FIELDS: {"error": exc}})
            except Exception:  # a listener bug must not go unseen, nor stop the retries
                log.exception("firewalld listener failed; retrying")
            self._stopping.wait(RETRY)

    def _listen(self) -> None:
        rule = MatchRule(type="signal", interface=INTERFACE, member="Reloaded")
        with open_dbus_connection(bus="SYSTEM") as conn:
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=CALL_TIMEOUT)
            log.debug("listening for firewalld reloads on the system D-Bus")
            with conn.filter(rule) as matches:
                while not self._stopping.is_set():
                    try:
                        conn.recv_until_filtered(matches, timeout=1.0)  # takes it off the queue
                    except TimeoutError:
                        continue
                    reloaded = Trigger(Kind.FIREWALL_RELOADED, "firewalld reloaded", time.time())
                    self._triggers.put(reloaded)
