"""A small load generator, run inside an outside namespace:

    python3 -m dockwall_sandbox.loadgen conn SRC DST PORT SECONDS THREADS
        many short HTTP/1.0 connections; prints {"connections": N, "seconds": S, "errors": E}
    python3 -m dockwall_sandbox.loadgen bulk SRC DST PORT PATH
        one long download; prints {"bytes": N, "seconds": S}

Every loop is bounded in time and count; traffic goes only to the address given (a sandbox's
own Docker host).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from ipaddress import ip_address

MAX_CONNECTIONS = 1_000_000
TIMEOUT = 2.0


def _connect(source: str, destination: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ip_address(destination).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((destination, port))
    return sock


def one_request(source: str, destination: str, port: int) -> bool:
    try:
        with _connect(source, destination, port) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while sock.recv(65536):
                pass
        return True
    except OSError:
        return False


def connections(
    source: str, destination: str, port: int, seconds: float, threads: int
) -> dict[str, float]:
    counts = [0] * threads
    errors = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(slot: int) -> None:
        while time.monotonic() < deadline and counts[slot] < MAX_CONNECTIONS:
            if one_request(source, destination, port):
                counts[slot] += 1
            else:
                errors[slot] += 1

    start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"connections": sum(counts), "errors": sum(errors), "seconds": time.monotonic() - start}


def bulk(source: str, destination: str, port: int, path: str) -> dict[str, float]:
    buffer = bytearray(1 << 20)
    total = 0
    start = time.monotonic()
    with _connect(source, destination, port) as sock:
        sock.settimeout(30)
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        while True:
            got = sock.recv_into(buffer)
            if not got:
                break
            total += got
    return {"bytes": total, "seconds": time.monotonic() - start}


def main() -> None:
    mode, source, destination, port = sys.argv[1:5]
    if mode == "conn":
        seconds, threads = float(sys.argv[5]), int(sys.argv[6])
        result = connections(source, destination, int(port), seconds, threads)
    else:
        result = bulk(source, destination, int(port), sys.argv[5])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
