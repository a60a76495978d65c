"""Why the daemon should look at the host again. Produced by threads and signal handlers,
consumed by the main loop through a SimpleQueue (whose put is safe in a signal handler)."""

from __future__ import annotations

import queue
import re
import time
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    EVENT = "event"  # a Docker event that can change addresses, names or networks
    DOCKER_UP = "docker-up"  # the event stream is (re)connected: resnapshot, re-assert jumps
    DOCKER_DOWN = "docker-down"  # the event stream ended
    RELOAD = "reload"  # SIGHUP: read the policy file again
    FIREWALL_RELOADED = "firewall-reloaded"  # firewalld said it reloaded: check at once
    KERNEL_CHANGED = "kernel-changed"  # nftables changed a filter table: check at once
    STOP = "stop"  # SIGTERM/SIGINT
    RESYNC = "resync"  # the slow periodic full snapshot, to find a missed event


@dataclass(frozen=True)
class Trigger:
    kind: Kind
    what: str = ""  # for logs: "container www-nginx start"
    at: float = 0.0  # wall-clock time the cause happened (Docker's event time), 0 if unknown
    # the one container an event is about (its id), where reading that container again is
    # all it takes; "" for events that change more (a network made or removed)
    container: str = ""
    action: str = ""  # for events, the object type and action: "container die"


Triggers = queue.SimpleQueue[Trigger]


def wait(triggers: Triggers, timeout: float) -> list[Trigger]:
    """Block until a trigger arrives or timeout passes, then take every one already queued:
    a burst of events costs one snapshot, with no added delay."""
    try:
        batch = [triggers.get(timeout=max(timeout, 0.0))]
    except queue.Empty:
        return []
    while True:
        try:
            batch.append(triggers.get_nowait())
        except queue.Empty:
            return batch


def event_trigger(event: dict[str, object]) -> Trigger | None:
    """A Trigger for a Docker event that matters, else None."""
    kind, action = event.get("Type"), str(event.get("Action", ""))
    if (kind, action.split(":", maxsplit=1)[0]) not in RELEVANT:
        return None
    actor = event.get("Actor") or {}
    attrs = actor.get("Attributes", {}) if isinstance(actor, dict) else {}
    name = attrs.get("name") or (actor.get("ID", "")[:12] if isinstance(actor, dict) else "")
    nanos = event.get("timeNano")
    at = int(nanos) / 1e9 if isinstance(nanos, int | str) else time.time()
    container = _container_of(kind, action, actor)
    return Trigger(Kind.EVENT, f"{kind} {name} {action}", at, container, f"{kind} {action}")


def _container_of(kind: object, action: str, actor: object) -> str:
    """The container a container event, or a network (dis)connect, is about."""
    if not isinstance(actor, dict):
        return ""
    attrs = actor.get("Attributes") or {}
    found = actor.get("ID") if kind == "container" else None
    if kind == "network" and action in ("connect", "disconnect") and isinstance(attrs, dict):
        found = attrs.get("container")
    return found if isinstance(found, str) and _HEX_ID.fullmatch(found) else ""


_HEX_ID = re.compile(r"[0-9a-f]{64}")


RELEVANT = {
    ("container", "create"),  # its host ports are known before docker-proxy listens
    ("container", "start"),
    ("container", "die"),
    ("container", "destroy"),
    ("container", "rename"),
    ("network", "connect"),
    ("network", "disconnect"),
    ("network", "create"),
    ("network", "destroy"),
}
EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": sorted({action for _, action in RELEVANT}),
}
