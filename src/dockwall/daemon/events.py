"""Follow Docker's event stream in a thread; reconnect with backoff when it ends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import docker
import docker.errors
import requests.exceptions

from dockwall.daemon.triggers import EVENT_FILTERS, Kind, Trigger, Triggers, event_trigger
from dockwall.errors import DockwallError

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.05  # seconds: Docker restarting comes back quickly, don't wait long
MAX_BACKOFF = 2.0
QUIET_LOG_INTERVAL = 60.0  # while Docker stays unreachable, say so once per this


class EventFollower(threading.Thread):
    def __init__(self, connect: Callable[[], docker.DockerClient], triggers: Triggers) -> None:
        super().__init__(name="docker-events", daemon=True)
        self._connect = connect
        self._triggers = triggers
        self._stopping = threading.Event()
        self._stream: object | None = None

    def stop(self) -> None:
        self._stopping.set()
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def run(self) -> None:
        backoff, last_log = FIRST_BACKOFF, 0.0
        while not self._stopping.is_set():
            try:
                self._follow()
                backoff = FIRST_BACKOFF
            except (
                DockwallError,
                docker.errors.DockerException,
                requests.exceptions.RequestException,
                OSError,
            ) as exc:
                if time.monotonic() - last_log > QUIET_LOG_INTERVAL:
                    log.warning("Docker unreachable, retrying: %s", exc)
                    last_log = time.monotonic()
            if self._stopping.is_set():
                return
            self._triggers.put(Trigger(Kind.DOCKER_DOWN, "event stream ended", time.time()))
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _follow(self) -> None:
        client = self._connect()
        try:
            self._stream = client.api.events(decode=True, filters=EVENT_FILTERS)
            self._triggers.put(Trigger(Kind.DOCKER_UP, "event stream connected", time.time()))
            log.info("following Docker's events")
            for event in self._stream:
                trigger = event_trigger(event)
                if trigger is not None:
                    self._triggers.put(trigger)
        finally:
            self._stream = None
            client.close()
