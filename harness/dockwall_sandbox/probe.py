"""Run many TCP/HTTP probes at once from the namespace this process is in.

Used as ``ip netns exec NS python3 -m dockwall_sandbox.probe``: reads
``{"timeout": SECONDS, "cases": [[SOURCE or null, DESTINATION, PORT], ...]}`` as
JSON on stdin and prints a JSON list of booleans, one per case. A case passes
when a connection from SOURCE reaches DESTINATION:PORT and an HTTP reply comes
back for ``GET /``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from ipaddress import ip_address

REQUEST = b"GET / HTTP/1.0\r\n\r\n"
DEFAULT_TIMEOUT = 1.5
PER_ENDPOINT = 8


def probe_one(source: str | None, destination: str, port: int, timeout: float) -> bool:
    family = socket.AF_INET6 if ip_address(destination).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            if source is not None:
                sock.bind((source, 0))
            sock.connect((destination, port))
            sock.sendall(REQUEST)
            reply = b""
            while len(reply) < 5:
                chunk = sock.recv(5 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except OSError:
            return False
    return reply.startswith(b"HTTP/")


def probe_all(cases: list[tuple[str | None, str, int]], timeout: float) -> list[bool]:
    """All cases at once, but at most PER_ENDPOINT at a time to one address and port.

    busybox httpd listens with a backlog of 9: more simultaneous SYNs overflow
    it, and a dropped SYN is only resent after a second, close to the timeout.
    """
    results = [False] * len(cases)
    gates = {(dst, port): threading.BoundedSemaphore(PER_ENDPOINT) for _src, dst, port in cases}

    def work(index: int, source: str | None, destination: str, port: int) -> None:
        with gates[(destination, port)]:
            results[index] = probe_one(source, destination, port, timeout)

    threads = [
        threading.Thread(target=work, args=(index, *case), daemon=True)
        for index, case in enumerate(cases)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    request = json.load(sys.stdin)
    cases = [(src, str(dst), int(port)) for src, dst, port in request["cases"]]
    timeout = float(request.get("timeout", DEFAULT_TIMEOUT))
    json.dump(probe_all(cases, timeout), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
