"""The Docker engines a sandbox can run, and which of them are installed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DOCKER28_ROOT = Path("/opt/dockwall-test/docker28")
DOCKER29_ROOT = Path("/opt/dockwall-test/docker29")
STABLE_RUNC = Path("/usr/sbin/runc")
SETUP_HINT = "run scripts/setup.sh"
DOCKER29_HINT = (
    "put moby's Docker 29 build (docker29.7.2-linux-amd64.tar.xz and its README) in "
    "../shared/engines/docker29/ beside this repository, then run scripts/setup.sh"
)


@dataclass(frozen=True)
class Engine:
    """How to start one Docker engine version.

    ``path_prefix`` goes first on dockerd's PATH, so that it finds the
    containerd, shim and docker-proxy it runs with. ``daemon_json`` is the text of
    its daemon.json; ``runtime`` the runc it is given (``--default-runtime``);
    ``host_sysctls`` what the host's admin sets before starting it.
    """

    name: str
    dockerd: Path
    path_prefix: tuple[Path, ...]
    extra_flags: tuple[str, ...]
    daemon_json: str = "{}"
    runtime: Path = STABLE_RUNC
    install_hint: str = SETUP_HINT
    host_sysctls: tuple[str, ...] = ()

    def missing(self) -> list[Path]:
        """Files this engine needs that are not installed."""
        needed = [self.dockerd, STABLE_RUNC, self.runtime]
        needed += [prefix / "containerd" for prefix in self.path_prefix[-1:]]
        return [path for path in dict.fromkeys(needed) if not path.exists()]

    def installed(self) -> bool:
        return not self.missing()

    def path_env(self) -> str:
        base = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return ":".join([str(prefix) for prefix in self.path_prefix] + base)


def _docker28_flags() -> tuple[str, ...]:
    return (
        f"--add-runtime=stable-runc={STABLE_RUNC}",
        "--default-runtime=stable-runc",
        f"--userland-proxy-path={DOCKER28_ROOT / 'usr/sbin/docker-proxy'}",
    )


def _docker29(name: str, daemon_json: str, host_sysctls: tuple[str, ...] = ()) -> Engine:
    """Docker 29.7.2 built from moby's source (../shared/engines/docker29/README.md): the
    containerd and shim of the Docker 28 packages, and runc through runc-notime, which
    takes out the time namespace that Debian 12's runc 1.1 refuses."""
    notime = DOCKER29_ROOT / "runc-notime"
    return Engine(
        name=name,
        dockerd=DOCKER29_ROOT / "dockerd",
        path_prefix=(DOCKER29_ROOT, DOCKER28_ROOT / "usr/bin"),
        extra_flags=(
            f"--add-runtime=notime-runc={notime}",
            "--default-runtime=notime-runc",
            f"--userland-proxy-path={DOCKER29_ROOT / 'docker-proxy'}",
        ),
        daemon_json=daemon_json,
        runtime=notime,
        install_hint=DOCKER29_HINT,
        host_sysctls=host_sysctls,
    )


ENGINES: dict[str, Engine] = {
    "20.10": Engine(
        name="20.10",
        dockerd=Path("/usr/sbin/dockerd"),
        path_prefix=(Path("/usr/sbin"), Path("/usr/bin")),
        extra_flags=("--experimental", "--ip6tables"),
    ),
    "28": Engine(
        name="28",
        dockerd=DOCKER28_ROOT / "usr/sbin/dockerd",
        path_prefix=(DOCKER28_ROOT / "usr/sbin", DOCKER28_ROOT / "usr/bin"),
        extra_flags=_docker28_flags(),
    ),
    "29": _docker29("29", "{}"),
    # Docker's nftables backend does not turn IPv4 forwarding on (it refuses to start
    # without it): the host's admin does, as Docker's documentation says.
    "29-nftables": _docker29(
        "29-nftables", '{"firewall-backend": "nftables"}', ("net.ipv4.ip_forward=1",)
    ),
}


def available_engines() -> list[str]:
    """Names (keys of :data:`ENGINES`) of the engines installed on this machine."""
    return [name for name, engine in ENGINES.items() if engine.installed()]


def unavailable_reason(engine: str) -> str | None:
    """Why ``engine`` cannot run on this machine (not root, not installed), or None."""
    if os.geteuid() != 0:
        return "a sandbox needs root (network namespaces, dockerd)"
    found = ENGINES[engine]
    missing = found.missing()
    if missing:
        listed = ", ".join(str(path) for path in missing)
        return f"Docker engine {engine} is not installed ({listed}): {found.install_hint}"
    return None
