"""A long-running prober: connect to every target over and over, one JSON line per attempt.

Run inside an outside namespace::

    ip netns exec NS python -m dockwall_sandbox.streamprobe --targets FILE

``FILE`` holds a JSON list of ``{"id": ..., "src": ADDRESS, "dst": ADDRESS, "port": N}``;
it is read again whenever it changes (replace it atomically), so targets can come and go.
Each target has one thread of its own, so at most one connection to it is open at a time
(busybox httpd accepts only about nine pending connections). Every attempt prints::

    {"t": START, "d": SECONDS, "id": ..., "conn": BOOL, "http": BOOL, "who": TEXT or null}

``t`` is ``time.time()`` when the attempt started; ``conn`` is true when the TCP handshake
completed, ``http`` when an HTTP reply came back, ``who`` the body of a 200 reply to
``GET /who`` (the sandbox image answers its container's hostname there). Stopped by
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from types import FrameType
from typing import TextIO

from .image import WHO_PATH

REQUEST = f"GET {WHO_PATH} HTTP/1.0\r\n\r\n".encode()
MAX_REPLY = 4096


@dataclass(frozen=True)
class Target:
    id: str
    src: str
    dst: str
    port: int


@dataclass(frozen=True)
class Attempt:
    conn: bool
    http: bool
    who: str | None


def attempt(target: Target, timeout: float) -> Attempt:
    """One connection from target.src to target.dst:port, with GET /who."""
    family = socket.AF_INET6 if ip_address(target.dst).version == 6 else socket.AF_INET
    deadline = time.monotonic() + timeout
    conn = False
    reply = b""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Close with a reset: thousands of attempts a minute leave no TIME_WAIT behind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.settimeout(timeout)
            sock.bind((target.src, 0))
            sock.connect((target.dst, target.port))
            conn = True
            sock.sendall(REQUEST)
            while len(reply) < MAX_REPLY:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                chunk = sock.recv(MAX_REPLY - len(reply))
                if not chunk:
                    break
                reply += chunk
        except OSError:
            pass
    return Attempt(conn, reply.startswith(b"HTTP/"), _who(reply))


def _who(reply: bytes) -> str | None:
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    text = body.decode(errors="replace").strip()
    return text or None


class Prober:
    """One thread per target; a line of JSON per attempt on ``out``."""

    def __init__(self, out: TextIO, timeout: float, period: float) -> None:
        self.out = out
        self.timeout = timeout
        self.period = period
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[Target, threading.Event] = {}

    def set_targets(self, targets: list[Target]) -> None:
        wanted = set(targets)
        for target, stop in list(self._running.items()):
            if target not in wanted:
                stop.set()
                del self._running[target]
        for target in targets:
            if target not in self._running:
                stop = threading.Event()
                self._running[target] = stop
                thread = threading.Thread(target=self._loop, args=(target, stop), daemon=True)
                thread.start()

    def _loop(self, target: Target, stop: threading.Event) -> None:
        while not (stop.is_set() or self.stopping.is_set()):
            started, clock = time.time(), time.monotonic()
            result = attempt(target, self.timeout)
            took = time.monotonic() - clock
            line = json.dumps(
                {
                    "t": round(started, 4),
                    "d": round(took, 4),
                    "id": target.id,
                    "conn": result.conn,
                    "http": result.http,
                    "who": result.who,
                }
            )
            with self._lock:
                self.out.write(line + "\n")
                self.out.flush()
            stop.wait(max(self.period - took, 0.0))

    def stop(self) -> None:
        self.stopping.set()
        for stop in self._running.values():
            stop.set()


def read_targets(path: Path) -> list[Target]:
    raw = json.loads(path.read_text())
    return [Target(str(t["id"]), str(t["src"]), str(t["dst"]), int(t["port"])) for t in raw]


def follow(path: Path, prober: Prober, poll: float = 0.1) -> None:
    """Apply the targets in ``path`` now and whenever the file changes, until stopped."""
    seen: int | None = None
    while not prober.stopping.is_set():
        try:
            stamp = path.stat().st_mtime_ns
            if stamp != seen:
                prober.set_targets(read_targets(path))
                seen = stamp
        except (OSError, ValueError, KeyError, TypeError):
            pass  # being replaced, or not there yet: try again
        prober.stopping.wait(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=0.3, help="seconds per attempt")
    parser.add_argument("--period", type=float, default=0.3, help="seconds between starts")
    args = parser.parse_args(argv)
    prober = Prober(sys.stdout, args.timeout, args.period)

    def stop(signum: int, frame: FrameType | None) -> None:
        prober.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    follow(args.targets, prober)
    prober.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
