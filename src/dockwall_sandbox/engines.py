"""The Docker engines a sandbox can run, and which of them are installed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DOCKER28_ROOT = Path("/opt/dockwall-test/docker28")
STABLE_RUNC = Path("/usr/sbin/runc")


@dataclass(frozen=True)
class Engine:
    """How to start one Docker engine version.

    ``path_prefix`` goes first on dockerd's PATH, so that it finds the
    containerd, shim and docker-proxy shipped with it.
    """

    name: str
    dockerd: Path
    path_prefix: tuple[Path, ...]
    extra_flags: tuple[str, ...]

    def missing(self) -> list[Path]:
        """Files this engine needs that are not installed."""
        needed = [self.dockerd, STABLE_RUNC]
        needed += [prefix / "containerd" for prefix in self.path_prefix[-1:]]
        return [path for path in needed if not path.exists()]

    def installed(self) -> bool:
        return not self.missing()

    def path_env(self) -> str:
        base = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return ":".join([str(prefix) for prefix in self.path_prefix] + base)


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
        extra_flags=(
            f"--add-runtime=stable-runc={STABLE_RUNC}",
            "--default-runtime=stable-runc",
            f"--userland-proxy-path={DOCKER28_ROOT / 'usr/sbin/docker-proxy'}",
        ),
    ),
}


def available_engines() -> list[str]:
    """Names (keys of :data:`ENGINES`) of the engines installed on this machine."""
    return [name for name, engine in ENGINES.items() if engine.installed()]


def unavailable_reason(engine: str) -> str | None:
    """Why ``engine`` cannot run on this machine (not root, not installed), or None."""
    if os.geteuid() != 0:
        return "a sandbox needs root (network namespaces, dockerd)"
    missing = ENGINES[engine].missing()
    if missing:
        listed = ", ".join(str(path) for path in missing)
        return f"Docker engine {engine} is not installed ({listed}): run scripts/setup.sh"
    return None
