"""Removing what a sandbox (or an earlier, killed run) left behind."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from . import cgroup, daemon, netns
from ._proc import UMOUNT, cmdline, pid_alive, run, stop_pid
from .state import BASES, StateDirs, run_ids_on_disk
from .topology import NS_PREFIX

log = logging.getLogger(__name__)


def _unescape(field: str) -> str:
    """Undo the octal escapes (``\\040`` for a space, ...) of /proc/self/mountinfo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(roots: list[Path]) -> list[Path]:
    """Mount points at or below ``roots``, deepest first."""
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(_unescape(line.split()[4]))
        if any(point == root or root in point.parents for root in roots):
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(roots: list[Path]) -> list[Path]:
    done = mounts_under(roots)
    for point in done:
        run([UMOUNT, "-l", str(point)], check=False)
    return done


def stop_helpers(dirs: StateDirs) -> list[int]:
    """Stop the helper processes (web servers) whose pids the sandbox recorded."""
    stopped = []
    for pid in dirs.helper_pids():
        argv = cmdline(pid)
        if pid_alive(pid) and argv and "busybox" in argv[0]:
            stop_pid(pid, grace=2.0)
            stopped.append(pid)
    return stopped


def stop_namespace_processes(name: str) -> list[int]:
    """Stop what still runs in one of our own namespaces (by pid, from ``ip netns pids``)."""
    pids = netns.pids_in(name)
    for pid in pids:
        stop_pid(pid, grace=2.0)
    return pids


def remove_run(dirs: StateDirs, spaces: netns.Namespaces, dockerd_pid: int | None) -> None:
    """Take one run down, whatever state its setup reached."""
    stop_helpers(dirs)
    pids = [dockerd_pid] if dockerd_pid else []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int(dirs.dockerd_pidfile.read_text().strip()))
    for pid in dict.fromkeys(pids):
        daemon.stop(pid, dirs)
    daemon.stop_runtime_leftovers(dirs)
    cgroup.remove(dirs.run_id)
    unmount_all([dirs.run, dirs.data])
    existing = netns.list_namespaces()
    for name in spaces.all():
        if name in existing:
            stop_namespace_processes(name)
            netns.delete_namespace(name)
    for folder in (dirs.run, dirs.data):
        shutil.rmtree(folder, ignore_errors=True)


def _run_id_of(namespace: str) -> str | None:
    if not namespace.startswith(NS_PREFIX):
        return None
    return namespace[len(NS_PREFIX) :].rsplit("-", 1)[0]


def cleanup_leftovers() -> list[str]:
    """Remove every sandbox run whose owning process is gone.

    Runs of a still-living process (another test session) are left alone.
    Returns the run ids removed.
    """
    ids = run_ids_on_disk()
    ids.update(rid for name in netns.list_namespaces() if (rid := _run_id_of(name)))
    ids.update(cgroup.run_ids())
    removed = []
    for rid in sorted(ids):
        dirs = StateDirs(rid)
        if dirs.owner_alive():
            continue
        log.info("removing leftovers of sandbox run %s", rid)
        remove_run(dirs, netns.Namespaces(rid), None)
        removed.append(rid)
    for base in BASES:
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    return removed
