"""dockerd in a cgroup (v2) of its own, as under systemd (system.slice/docker.service).

docker-proxy inherits dockerd's cgroup, and dockwall's nftables backend matches that cgroup
to keep a port closed until it has seen the container behind it. On a test machine every
process may sit in the root cgroup; each sandbox run gets `dockwall-sandbox-<run id>` at
the top of the cgroup v2 hierarchy. Where there is no cgroup v2 hierarchy, nothing is done
(and dockwall falls back to governing such ports within its reaction time).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

MOUNTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
PREFIX = "dockwall-sandbox-"


def hierarchy() -> Path | None:
    """Where cgroup v2 is mounted (hybrid hosts: /sys/fs/cgroup/unified)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) > 4 and Path(fields[4]) in MOUNTS:
            return Path(fields[4])
    return None


def folder(run_id: str) -> Path | None:
    root = hierarchy()
    return None if root is None else root / f"{PREFIX}{run_id}"


def place(pid: int, run_id: str) -> None:
    """Move process pid (dockerd, before it starts anything) into the run's cgroup."""
    where = folder(run_id)
    if where is None:
        log.info("no cgroup v2 hierarchy: dockerd stays in its cgroup")
        return
    try:
        where.mkdir(exist_ok=True)
        (where / "cgroup.procs").write_text(f"{pid}\n")
    except OSError as exc:
        log.warning("dockerd stays in its cgroup: %s", exc)


def run_ids() -> set[str]:
    """The runs that have a cgroup here."""
    root = hierarchy()
    if root is None:
        return set()
    return {p.name[len(PREFIX) :] for p in root.glob(f"{PREFIX}*") if p.is_dir()}


def remove(run_id: str) -> None:
    """Remove the run's cgroup (after its processes are gone)."""
    where = folder(run_id)
    if where is None or not where.is_dir():
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # a shim may still be exiting
        with contextlib.suppress(OSError):
            where.rmdir()
            return
        time.sleep(0.1)
    log.warning("cgroup %s not removed: %s", where, (where / "cgroup.procs").read_text())
