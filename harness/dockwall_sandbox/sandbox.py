"""The Sandbox: a real dockerd in a HOST namespace, with WAN and LAN hosts beside it."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import TracebackType

from . import cgroup, cleanup, daemon, netns
from ._proc import DOCKER_CLI, SandboxError, pid_alive, run
from .containers import ContainerInfo, PortMap, Scenario, from_inspect
from .engines import ENGINES, Engine
from .image import IMAGE, INDEX_HTML, rootfs_tar
from .pythonpath import child_env
from .state import StateDirs
from .topology import (
    DBNET_V4,
    DBNET_V6,
    EGRESS_PORT,
    EGRESS_SERVER4,
    EGRESS_SERVER6,
    Side,
    side_of,
)

log = logging.getLogger(__name__)

Address = str | IPv4Address | IPv6Address
ProbeCase = tuple[Address | None, Address, int]
"""(source address or None for the namespace's choice, destination, TCP port)."""

PROBE_TIMEOUT = 1.5


def _url(address: IPv4Address | IPv6Address, port: int) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{port}/"


class Sandbox:
    """A Docker engine in its own network namespace, reachable from WAN and LAN hosts.

    Use as a context manager; the run id makes the names of two concurrent runs
    differ. Nothing outside its namespaces and state folders is changed.
    """

    def __init__(
        self, engine: str | Engine = "28", run_id: str | None = None, ipv6: bool = True
    ) -> None:
        """ipv6=False runs Docker's default daemon config: no IPv6 on Docker's networks, while
        the host's interfaces keep theirs, so Docker publishes on [::] through docker-proxy."""
        self.engine = ENGINES[engine] if isinstance(engine, str) else engine
        self.ipv6 = ipv6
        self.run_id = run_id or secrets.token_hex(3)
        self.dirs = StateDirs(self.run_id)
        self.spaces = netns.Namespaces(self.run_id)
        self.dockerd_pid: int | None = None
        self._listen: dict[str, tuple[int, ...]] = {}
        self._outside_servers: set[tuple[Side, str, int]] = set()
        self._started = False

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create namespaces, start dockerd, import the image. Cleans up on failure."""
        missing = self.engine.missing()
        if missing:
            raise SandboxError(f"engine {self.engine.name} is not installed: missing {missing}")
        self._started = True
        try:
            self.dirs.create()
            netns.create(self.spaces)
            if self.engine.host_sysctls:
                netns.sysctl(self.spaces.host, *self.engine.host_sysctls)
            self.dockerd_pid = daemon.start(
                self.engine, self.dirs, self.spaces.host, ipv6=self.ipv6
            )
            self.docker("import", "-", IMAGE, input=rootfs_tar(), timeout=120)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop containers and dockerd, unmount, delete namespaces and folders."""
        if not self._started:
            return
        self._started = False
        if self.dockerd_pid is not None and pid_alive(self.dockerd_pid):
            self._remove_containers()
        cleanup.remove_run(self.dirs, self.spaces, self.dockerd_pid)
        self.dockerd_pid = None

    def _remove_containers(self) -> None:
        listed = self.docker("ps", "-aq", check=False, timeout=20)
        ids = listed.stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False, timeout=60)

    def restart_engine(self, crash: bool = False, timeout: float = 90.0) -> None:
        """Stop dockerd and start it again with the same roots, socket and namespace.

        ``crash=False``: SIGTERM, and wait while dockerd stops its containers, as
        ``systemctl restart docker`` does. ``crash=True``: SIGKILL dockerd alone, so
        containerd's shims and the containers are still running when it starts again
        (it then stops them, having no live restore). Either way containers with a
        restart policy come back; wait for them with :meth:`wait_running`. Returns when
        the new dockerd answers its API.
        """
        pid = self.dockerd_pid
        if pid is None or not pid_alive(pid):
            raise SandboxError("dockerd is not running")
        if crash:
            daemon.crash(pid, self.dirs)
        else:
            daemon.terminate(pid, self.dirs)
        self.dockerd_pid = None
        self.dockerd_pid = daemon.start(
            self.engine, self.dirs, self.spaces.host, timeout, ipv6=self.ipv6
        )

    # -- running things -----------------------------------------------------

    @property
    def docker_host(self) -> str:
        """The ``DOCKER_HOST`` URL of this sandbox's engine."""
        return f"unix://{self.dirs.socket}"

    @property
    def host_ns(self) -> str:
        return self.spaces.host

    def outside_ns(self, side: Side | str) -> str:
        return self.spaces.outside(Side(side))

    def docker(
        self,
        *args: str,
        input: str | bytes | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI (``/usr/bin/docker``) against this sandbox's engine."""
        return run(
            [DOCKER_CLI, *args],
            input=input,
            timeout=timeout,
            check=check,
            env=daemon.docker_env(self.dirs),
        )

    def run_in_host(
        self,
        argv: Sequence[str],
        input: str | bytes | None = None,
        timeout: float = 30.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        *,
        as_dockwall: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the HOST namespace (``ip netns exec``: /sys is HOST's).

        ``as_dockwall``: as dockwall runs on a real host, ``nsenter --net`` with the
        machine's /sys, so that dockerd's cgroup is found under /sys/fs/cgroup (``ip netns
        exec`` mounts a fresh sysfs without it). Whatever reads or writes dockwall's rules
        must run this way, or it renders other rules."""
        enter = netns.enter_argv if as_dockwall else netns.exec_argv
        return run(
            enter(self.host_ns, list(argv)),
            input=input,
            timeout=timeout,
            check=check,
            env=env,
        )

    def run_in_outside(
        self,
        side: Side | str,
        argv: Sequence[str],
        input: str | bytes | None = None,
        timeout: float = 30.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the WAN or LAN namespace."""
        return run(
            netns.exec_argv(self.outside_ns(side), list(argv)),
            input=input,
            timeout=timeout,
            check=check,
        )

    def engine_version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def firewall_dump(self) -> str:
        """``iptables-save`` and ``ip6tables-save`` of HOST, for failure messages."""
        v4 = self.run_in_host(["/usr/sbin/iptables-save"], check=False).stdout
        v6 = self.run_in_host(["/usr/sbin/ip6tables-save"], check=False).stdout
        return f"{v4}\n{v6}"

    # -- containers ---------------------------------------------------------

    def create_network(self, name: str, subnet4: IPv4Network, subnet6: IPv6Network) -> None:
        """A user-defined bridge network (documentation ranges only): IPv4+IPv6, or IPv4 only
        in Docker's default config (ipv6=False)."""
        six = ["--ipv6", "--subnet", str(subnet6)] if self.ipv6 else []
        self.docker("network", "create", "--subnet", str(subnet4), *six, name)

    def start_container(
        self,
        name: str,
        ports: Sequence[PortMap],
        network: str | None = None,
        labels: Mapping[str, str] | None = None,
        listen: Sequence[int] | None = None,
        *,
        restart: str | None = None,
        ip: Address | None = None,
        stop_timeout: int | None = None,
    ) -> ContainerInfo:
        """Run busybox httpd on ``listen`` (default: the container ports of ``ports``).

        ``restart`` is Docker's ``--restart`` policy ("always", "unless-stopped", ...);
        ``ip`` a fixed IPv4 or IPv6 address on ``network`` (user-defined networks only);
        ``stop_timeout`` Docker's ``--stop-timeout`` in seconds (httpd as pid 1 ignores
        SIGTERM, so every stop, also dockerd's own at shutdown, waits that long; default 10).
        """
        listen_ports = (
            tuple(listen)
            if listen is not None
            else tuple(dict.fromkeys(container for _host, container in ports)) or (80,)
        )
        argv = ["run", "-d", "--name", name]
        if network is not None:
            argv += ["--network", network]
        if restart is not None:
            argv += ["--restart", restart]
        if stop_timeout is not None:
            argv += ["--stop-timeout", str(stop_timeout)]
        if ip is not None:
            if network is None:
                raise ValueError("a fixed address needs a user-defined network")
            address = ip_address(ip)
            argv += ["--ip" if address.version == 4 else "--ip6", str(address)]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        for host_port, container_port in ports:
            argv += ["-p", f"{host_port}:{container_port}"]
        argv += [IMAGE, "/bin/serve", *(str(port) for port in listen_ports)]
        self.docker(*argv)
        self._listen[name] = listen_ports
        info = self.inspect(name)
        self._wait_listening([info])
        return info

    def wait_running(self, names: Sequence[str], timeout: float = 60.0) -> list[ContainerInfo]:
        """Wait until every container in ``names`` runs and listens; their fresh infos."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.docker("ps", "--format", "{{.Names}}", check=False, timeout=20)
            running = set(listed.stdout.split()) if listed.returncode == 0 else set()
            if running.issuperset(names):
                break
            if time.monotonic() > deadline:
                missing = sorted(set(names) - running)
                raise SandboxError(f"containers not running after {timeout}s: {missing}")
            time.sleep(0.1)
        infos = [self.inspect(name) for name in names]
        self._wait_listening(infos, timeout=max(deadline - time.monotonic(), 5.0))
        return infos

    def remove_container(self, name: str) -> None:
        self.docker("rm", "-f", name)
        self._listen.pop(name, None)

    def inspect(self, name: str) -> ContainerInfo:
        data = json.loads(self.docker("inspect", name).stdout)[0]
        return from_inspect(data, self._listen.get(name, ()))

    def _wait_listening(self, infos: Sequence[ContainerInfo], timeout: float = 15.0) -> None:
        cases: list[ProbeCase] = [
            (None, info.ipv4, port) for info in infos for port in info.listen_ports
        ]
        deadline = time.monotonic() + timeout
        while True:
            results = self._probe_ns(self.host_ns, cases, timeout=1.0)
            if all(results):
                return
            if time.monotonic() > deadline:
                failed = [case for case, ok in zip(cases, results, strict=True) if not ok]
                raise SandboxError(f"containers not listening: {failed}")
            time.sleep(0.1)

    def start_seed_scenario(
        self, restart: str | None = None, stop_timeout: int | None = None
    ) -> Scenario:
        """www-nginx (80, 443) and admin-app (8080->80) on docker0; db (5432) on dbnet.

        ``restart`` and ``stop_timeout`` are passed to every container (see
        :meth:`start_container`).
        """
        self.create_network("dbnet", DBNET_V4, DBNET_V6)
        www = self.start_container(
            "www-nginx", [(80, 80), (443, 443)], restart=restart, stop_timeout=stop_timeout
        )
        admin = self.start_container(
            "admin-app", [(8080, 80)], restart=restart, stop_timeout=stop_timeout
        )
        db = self.start_container(
            "db", [(5432, 5432)], network="dbnet", restart=restart, stop_timeout=stop_timeout
        )
        return Scenario({info.name: info for info in (www, admin, db)})

    # -- probing ------------------------------------------------------------

    def probe(
        self, src_ns: Side | str, cases: Sequence[ProbeCase], timeout: float = PROBE_TIMEOUT
    ) -> list[bool]:
        """Try every case at once from the WAN or LAN namespace; True where HTTP answered."""
        return self._probe_ns(self.outside_ns(src_ns), cases, timeout)

    def probe_auto(self, cases: Sequence[ProbeCase], timeout: float = PROBE_TIMEOUT) -> list[bool]:
        """Like :meth:`probe`, each case run from the namespace that owns its source."""
        groups: dict[Side, list[int]] = {}
        for index, (source, _dst, _port) in enumerate(cases):
            if source is None:
                raise ValueError("probe_auto needs a source address in every case")
            groups.setdefault(side_of(source), []).append(index)
        procs = {
            side: self._spawn_probe(self.outside_ns(side), [cases[i] for i in indexes], timeout)
            for side, indexes in groups.items()
        }
        results = [False] * len(cases)
        for side, (proc, request) in procs.items():
            for index, ok in zip(
                groups[side], self._finish_probe(proc, request, timeout), strict=True
            ):
                results[index] = ok
        return results

    def _probe_ns(self, ns: str, cases: Sequence[ProbeCase], timeout: float) -> list[bool]:
        if not cases:
            return []
        proc, request = self._spawn_probe(ns, cases, timeout)
        return self._finish_probe(proc, request, timeout)

    def _spawn_probe(
        self, ns: str, cases: Sequence[ProbeCase], timeout: float
    ) -> tuple[subprocess.Popen[bytes], bytes]:
        request = json.dumps(
            {
                "timeout": timeout,
                "cases": [
                    [None if src is None else str(ip_address(src)), str(ip_address(dst)), int(port)]
                    for src, dst, port in cases
                ],
            }
        ).encode()
        argv = netns.exec_argv(ns, [sys.executable, "-m", "dockwall_sandbox.probe"])
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        return proc, request

    @staticmethod
    def _finish_probe(proc: subprocess.Popen[bytes], request: bytes, timeout: float) -> list[bool]:
        try:
            out, err = proc.communicate(request, timeout=timeout * 4 + 10)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate(timeout=5)
            raise SandboxError("probe process hung") from exc
        if proc.returncode != 0:
            raise SandboxError(f"probe failed ({proc.returncode}): {err.decode(errors='replace')}")
        results = json.loads(out)
        return [bool(ok) for ok in results]

    # -- traffic from containers -------------------------------------------

    def _start_egress_server(self) -> None:
        for address in (EGRESS_SERVER4, EGRESS_SERVER6):
            self.start_outside_server(Side.WAN, address, EGRESS_PORT)

    def start_outside_server(self, side: Side, address: Address, port: int) -> None:
        """busybox httpd on an outside host (``address`` in the ``side`` namespace) for
        containers to call; once per address and port."""
        key = (side, str(ip_address(address)), port)
        if key in self._outside_servers:
            return
        www = self.dirs.run / "egress-www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_bytes(INDEX_HTML)
        where = self.outside_ns(side)
        target = ip_address(address)
        bind = f"{target}:{port}" if target.version == 4 else f"[{target}]:{port}"
        proc = subprocess.Popen(
            netns.exec_argv(where, ["/bin/busybox", "httpd", "-f", "-p", bind, "-h", str(www)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.dirs.record_helper(proc.pid)
        self._outside_servers.add(key)
        cases: list[ProbeCase] = [(None, target, port)]
        deadline = time.monotonic() + 10
        while not all(self._probe_ns(where, cases, timeout=1.0)):
            if time.monotonic() > deadline:
                raise SandboxError(f"web server at {bind} in {side} did not come up")
            time.sleep(0.1)

    def container_resolves(self, container: str, name: str) -> bool:
        """True if ``name`` resolves inside ``container`` (busybox nslookup: Docker's embedded
        DNS at 127.0.0.11 on user-defined networks)."""
        done = self.docker(
            "exec", container, "timeout", "5", "nslookup", name, check=False, timeout=30
        )
        return done.returncode == 0

    def start_host_service(self, port: int, in_dockerd_cgroup: bool = False) -> None:
        """busybox httpd in the HOST namespace itself on ``port`` (IPv4 and IPv6): a host
        service, such as sshd, that Docker does not publish. Returns once it answers.
        ``in_dockerd_cgroup``: started in dockerd's cgroup, as dockerd's own API port on TCP
        or Swarm's ports are (not docker-proxy's)."""
        www = self.dirs.run / f"host-www-{port}"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_bytes(INDEX_HTML)
        serve = ["/bin/busybox", "httpd", "-f", "-p", f"[::]:{port}", "-h", str(www)]  # both
        argv = netns.exec_argv(self.host_ns, serve)
        if in_dockerd_cgroup:
            where = cgroup.folder(self.dirs.run_id)
            if where is None or not where.is_dir():
                raise SandboxError("dockerd has no cgroup of its own in this sandbox")
            # the process joins the cgroup before it opens its socket (a socket keeps the
            # cgroup it was made in); a constant script, the path and argv as arguments
            argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(where / "cgroup.procs")]
            argv += netns.exec_argv(self.host_ns, serve)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.dirs.record_helper(proc.pid)
        cases: list[ProbeCase] = [(None, "127.0.0.1", port), (None, "::1", port)]
        deadline = time.monotonic() + 10
        while not all(self._probe_ns(self.host_ns, cases, timeout=1.0)):
            if time.monotonic() > deadline:
                raise SandboxError(f"host service on port {port} did not come up")
            time.sleep(0.1)

    def container_fetch(
        self, container: str, address: Address, port: int, timeout: int = 2
    ) -> bool:
        """True if ``container`` gets an HTTP reply from ``address:port`` (busybox wget).

        busybox 1.35's ``wget -T`` crashes (SIGSEGV), so the busybox ``timeout``
        applet bounds the fetch instead.
        """
        url = _url(ip_address(address), port)
        done = self.docker(
            "exec",
            container,
            "timeout",
            str(timeout),
            "wget",
            "-q",
            "-O-",
            url,
            check=False,
            timeout=timeout + 20,
        )
        return done.returncode == 0

    def container_egress(self, container: str, family: int = 4) -> bool:
        """True if ``container`` reaches the web server on the WAN host 198.51.100.10."""
        self._start_egress_server()
        target = EGRESS_SERVER4 if family == 4 else EGRESS_SERVER6
        return self.container_fetch(container, target, EGRESS_PORT)

    def container_to_container(
        self, src: str, dst: ContainerInfo, port: int = 80, family: int = 4
    ) -> bool:
        """True if ``src`` reaches container ``dst`` on ``port`` at its own address."""
        target = dst.ipv4 if family == 4 else dst.ipv6
        if target is None:
            raise SandboxError(f"{dst.name} has no IPv6 address")
        return self.container_fetch(src, target, port)


@dataclass(frozen=True)
class SeededSandbox:
    """A running sandbox with the seed scenario started in it."""

    engine: str
    sandbox: Sandbox
    scenario: Scenario
