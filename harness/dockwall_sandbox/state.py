"""Where one sandbox keeps its files, and who owns them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._proc import pid_alive

RUN_BASE = Path("/run/dockwall-sandbox")
DATA_BASE = Path("/var/lib/dockwall-sandbox")
BASES = (RUN_BASE, DATA_BASE)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class StateDirs:
    """The folders of one sandbox run.

    ``run`` (under /run) holds the exec-root, the API socket, pid files and
    logs; ``data`` (under /var/lib, a disk file system overlay2 works on) is
    dockerd's data-root.
    """

    run_id: str

    @property
    def run(self) -> Path:
        return RUN_BASE / self.run_id

    @property
    def data(self) -> Path:
        return DATA_BASE / self.run_id

    @property
    def exec_root(self) -> Path:
        return self.run / "exec"

    @property
    def socket(self) -> Path:
        return self.run / "docker.sock"

    @property
    def dockerd_pidfile(self) -> Path:
        return self.run / "dockerd.pid"

    @property
    def helper_pidfile(self) -> Path:
        """Pids (one a line) of helper processes the sandbox started itself."""
        return self.run / "helpers.pid"

    @property
    def owner_file(self) -> Path:
        return self.run / "owner"

    @property
    def log(self) -> Path:
        return self.run / "dockerd.log"

    def create(self) -> None:
        self.run.mkdir(parents=True)
        self.data.mkdir(parents=True)
        self.exec_root.mkdir()
        pid = os.getpid()
        self.owner_file.write_text(f"{pid} {_start_time(pid)}\n")

    def owner_alive(self) -> bool:
        """True if the process that made this run is still running. A run whose owner file
        is not written yet (its folders made a moment ago, by another test session) counts
        as alive: removing it would pull a sandbox from under a session that is starting."""
        try:
            pid_text, start = self.owner_file.read_text().split()
        except (OSError, ValueError):
            return self._just_made()
        pid = int(pid_text)
        return pid_alive(pid) and _start_time(pid) == start

    def _just_made(self, grace: float = 60.0) -> bool:
        try:
            return time.time() - self.run.stat().st_mtime < grace
        except OSError:
            return False

    def record_helper(self, pid: int) -> None:
        with self.helper_pidfile.open("a") as handle:
            handle.write(f"{pid}\n")

    def helper_pids(self) -> list[int]:
        try:
            text = self.helper_pidfile.read_text()
        except OSError:
            return []
        return [int(word) for word in text.split() if word.isdigit()]


def run_ids_on_disk() -> set[str]:
    ids: set[str] = set()
    for base in BASES:
        if base.is_dir():
            ids.update(entry.name for entry in base.iterdir() if entry.is_dir())
    return ids
