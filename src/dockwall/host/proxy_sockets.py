"""Where docker-proxy's sockets live: dockerd's cgroup (v2), read from /proc. The edge.

docker-proxy is dockerd's child, so its listening sockets belong to dockerd's cgroup; a
packet the kernel would deliver to one of them can be matched in nftables's input hook
(`socket cgroupv2`), from a container's first packet, before dockwall has seen the container.
dockerd is the process at the other end of the API socket (SO_PEERCRED). Processes in that
cgroup other than docker-proxy (dockerd's API on TCP, Swarm's ports, a containerd dockerd
started) keep their ports: those are listed in `own` and never touched.

Nothing is found (None) for a Docker reached over TCP or SSH, a dockerd in the root cgroup,
cgroup v2 mounted anywhere but /sys/fs/cgroup or /sys/fs/cgroup/unified, or a cgroup name
dockwall does not write: then a new container's proxy-path port is governed within the
reaction time instead (as always with the iptables backend).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from dockwall.errors import UnsafeValueError
from dockwall.model.values import Proto, ProxyCgroup

log = logging.getLogger(__name__)

PROC = Path("/proc")
CGROUP_FS = Path("/sys/fs/cgroup")  # nft names cgroups relative to this folder
PROXY_COMMAND = "docker-proxy"
# dockerd itself holds each published port's socket for a moment while it starts a
# container (it binds, then hands the socket to docker-proxy): a socket dockerd holds is no
# sign of a port of its own. Its own are its API's TCP ports (-H/--host, daemon.json's
# "hosts") and Swarm's (2377/tcp, 7946/tcp and udp, when dockerd listens there).
DOCKERD_COMMAND = "dockerd"
SWARM_PORTS = ((Proto.TCP, 2377), (Proto.TCP, 7946), (Proto.UDP, 7946))
DEFAULT_CONFIG = "/etc/docker/daemon.json"
_LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}  # TCP_LISTEN, UDP bound
_PROTO = {"tcp": Proto.TCP, "tcp6": Proto.TCP, "udp": Proto.UDP, "udp6": Proto.UDP}


def find(socket_path: str | None) -> ProxyCgroup | None:
    """dockerd's cgroup, found through its API socket; None if it can't be (see above)."""
    if socket_path is None:
        return None
    try:
        pid = peer_pid(socket_path)
        return of_process(pid, _mounts(), PROC)
    except (OSError, ValueError, UnsafeValueError) as exc:
        log.debug("dockerd's cgroup not known: %s", exc)
        return None


def exists(where: ProxyCgroup) -> bool:
    """Whether nft can name that cgroup now."""
    return (CGROUP_FS / where.path).is_dir()


def peer_pid(socket_path: str) -> int:
    """The pid of the process that accepts on a unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(1.0)
        conn.connect(socket_path)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = int(struct.unpack("3i", creds)[0])
    if pid <= 0:
        raise ValueError("no peer process on the Docker socket")
    return pid


def of_process(pid: int, mounts: str, proc: Path) -> ProxyCgroup | None:
    """The cgroup of process `pid` as nft names it, with the ports its non-proxy processes
    listen on. `mounts` is /proc/self/mountinfo's text."""
    cgroup = _v2_cgroup((proc / str(pid) / "cgroup").read_text())
    mount = _v2_mount(mounts)
    if cgroup is None or cgroup == "/" or mount is None:
        return None
    prefix = mount.relative_to(CGROUP_FS).as_posix() if mount != CGROUP_FS else ""
    if prefix not in ("", "unified"):
        return None
    parts = [p for p in cgroup.split("/") if p]
    path = "/".join([prefix, *parts] if prefix else parts)
    own = _own_ports(mount / "/".join(parts), proc, pid, _api_ports(proc / str(pid)))
    return ProxyCgroup(path, len(parts), own)


def _v2_cgroup(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _v2_mount(mountinfo: str) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (its root, not a namespace's part of it)."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) > 4 and fields[3] == "/":
            return Path(fields[4])
    return None


def _mounts() -> str:
    return (PROC / "self" / "mountinfo").read_text()


def _own_ports(
    folder: Path, proc: Path, pid: int, api: set[tuple[Proto, int]]
) -> tuple[tuple[Proto, int], ...]:
    """(protocol, port) listened on by the cgroup's processes other than docker-proxy and
    dockerd, and those of dockerd's that are its API's or Swarm's."""
    others: set[str] = set()
    dockerd: set[str] = set()
    for member in _members(folder):
        try:
            comm = (proc / str(member) / "comm").read_text().strip()
            if comm != PROXY_COMMAND:
                inodes = _socket_inodes(proc / str(member) / "fd")
                (dockerd if comm == DOCKERD_COMMAND else others).update(inodes)
        except OSError:
            continue  # gone meanwhile
    known = api | set(SWARM_PORTS)
    found = set()
    for table, state in _LISTENING.items():
        try:
            text = (proc / str(pid) / "net" / table).read_text()
        except OSError:
            continue
        found |= {(_PROTO[table], port) for port in _ports(text, state, others)}
        held = {(_PROTO[table], port) for port in _ports(text, state, dockerd)}
        found |= held & known
    return tuple(sorted(found))


def _api_ports(process: Path) -> set[tuple[Proto, int]]:
    """The TCP ports of dockerd's API: its -H/--host arguments, else daemon.json's hosts."""
    args = (process / "cmdline").read_bytes().decode(errors="replace").split("\0")
    hosts: list[str] = []
    config = DEFAULT_CONFIG
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not eq and index + 1 < len(args):
            value = args[index + 1]
        if name in ("-H", "--host"):
            hosts.append(value)
        elif name == "--config-file":
            config = value
    if not hosts:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            listed = json.loads((process / "root" / config.lstrip("/")).read_text())
            hosts = [str(h) for h in listed.get("hosts", [])]
    ports = set()
    for host in hosts:
        if host.startswith("tcp://"):
            _, _, port = host[6:].rstrip("/").rpartition(":")
            ports |= {int(port)} if port.isdigit() else {2375, 2376}
    return {(Proto.TCP, p) for p in ports if 1 <= p <= 65535}


def _members(folder: Path) -> Iterator[int]:
    for root, _dirs, files in os.walk(folder):
        if "cgroup.procs" in files:
            with open(os.path.join(root, "cgroup.procs")) as procs:
                yield from (int(line) for line in procs if line.strip())


def _socket_inodes(fd_dir: Path) -> set[str]:
    found = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _ports(text: str, state: str, inodes: set[str]) -> Iterator[int]:
    """Local ports of the sockets in `state` whose inode is one of `inodes`
    (/proc/net/tcp's columns: sl local rem st ... uid timeout inode)."""
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 9 and cols[3] == state and cols[9] in inodes:
            yield int(cols[1].rsplit(":", 1)[1], 16)
