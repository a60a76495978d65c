"""An image of dockwall itself, made without pulling anything.

The Dockerfile's image is Python, iptables, nftables and ipset from Debian, with dockwall
pip-installed from the source tree. Nothing can be pulled here, so the same is put together
by hand: a Debian root file system from Debian's packages (mmdebstrap; cached under
/opt/dockwall-test, keyed by what goes into it), the Python packages dockwall depends on
copied from the interpreter running this (no registry), and dockwall installed from a copy of
the source tree by the root file system's own pip, as the Dockerfile's `pip install /src`
does. ``docker import`` turns it into an image, with the entry point the caller gives.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

from ._proc import SandboxError, pid_alive, run
from .sandbox import Sandbox

CACHE = Path("/opt/dockwall-test/image")
MMDEBSTRAP = "/usr/bin/mmdebstrap"
CHROOT = "/usr/sbin/chroot"
TAR = "/usr/bin/tar"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SUITE = "bookworm"
PACKAGES = ("python3", "python3-pip", "iptables", "nftables", "ipset")
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*")
SOURCE_FILES = ("pyproject.toml", "README.md", "src")  # what the Dockerfile copies
BUILD_TIMEOUT = 900.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _recipe() -> dict[str, object]:
    sources = SOURCES.read_text() if SOURCES.exists() else ""
    return {
        "suite": SUITE,
        "packages": PACKAGES,
        "excludes": DPKG_EXCLUDES,
        "sources": sources,
    }


def base_tar() -> Path:
    """The Debian root file system as a tar: built once with mmdebstrap, then reused."""
    recipe = json.dumps(_recipe(), sort_keys=True).encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    path = CACHE / f"debian-{SUITE}-{key}.tar"
    if path.exists():
        return path
    if not Path(MMDEBSTRAP).exists():
        raise SandboxError(f"{MMDEBSTRAP} is missing: run scripts/setup.sh")
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob("debian-*.tar*"):
        stale.unlink()  # another recipe's, or a killed build's (this is one process's cache)
    partial = path.with_suffix(f".tar.{os.getpid()}.partial")
    argv = [
        MMDEBSTRAP,
        "--variant=essential",
        "--mode=root",
        "--include=" + ",".join(PACKAGES),
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        "--format=tar",
        SUITE,
        str(partial),
    ]
    if SOURCES.exists():
        argv.append(str(SOURCES))  # the machine's own mirror
    run(argv, timeout=BUILD_TIMEOUT)
    partial.rename(path)
    return path


def _requirement_names(requirements: Sequence[str]) -> Iterator[str]:
    """The names required here: a requirement with a marker (a platform's, a Python
    version's) counts where pip installed it, so where its marker held."""
    for requirement in requirements:
        _spec, _sep, marker = requirement.partition(";")
        found = _NAME.match(requirement.strip())
        if found is None or "extra" in marker:
            continue  # an optional extra's: not installed by `pip install /src`
        if marker.strip() and not _installed(found.group(0)):
            continue
        yield found.group(0)


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def runtime_distributions(pyproject: Path) -> list[metadata.Distribution]:
    """The installed distributions that the project of ``pyproject`` needs at run time (its
    `dependencies` as the source tree has them, and theirs), each once."""
    seen: dict[str, metadata.Distribution] = {}
    project = tomllib.loads(pyproject.read_text())["project"]
    todo = list(_requirement_names(project.get("dependencies", [])))
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        todo.extend(_requirement_names(dist.requires or []))
    return list(seen.values())


def _python_version(root: Path) -> str:
    found = sorted(p.name for p in (root / "usr/lib").glob("python3.*") if p.is_dir())
    if not found:
        raise SandboxError(f"no python3 in {root}")
    return found[-1].removeprefix("python")


def _copy_distributions(root: Path, source: Path) -> None:
    version = _python_version(root)
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version != ours:  # pydantic_core is compiled for one Python
        raise SandboxError(f"the image's Python is {version}, this one {ours}")
    target = root / f"usr/local/lib/python{version}/dist-packages"
    for dist in runtime_distributions(source / "pyproject.toml"):
        for file in dist.files or []:
            if file.parts[0] == "..":
                continue  # a console script of its own: not needed by dockwall
            dest = target / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(str(dist.locate_file(file))), dest)


def _install_dockwall(root: Path, source: Path) -> None:
    copy = root / "src"  # where the Dockerfile copies it
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    copy.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, copy / name, ignore=ignore)
        else:
            shutil.copy2(source / name, copy / name)
    pip = ["python3", "-m", "pip", "install", "--no-cache-dir", "--root-user-action=ignore"]
    # the dependencies are there already (copied); no registry, no build isolation
    pip += ["--no-deps", "--no-index", "--no-build-isolation", "--break-system-packages"]
    run([CHROOT, str(root), *pip, "/src"], timeout=300)
    shutil.rmtree(copy)


def work_dir() -> Path:
    """An empty folder for this process's build, under the cache; those of processes that
    are gone (a killed run's) are removed first. The caller removes its own."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("work-*"):
        pid = old.name.removeprefix("work-")
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    work = CACHE / f"work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def image_tar(source: Path, work: Path) -> Path:
    """dockwall's image as a root file system tar in the empty folder ``work`` (the caller
    removes it), from the source tree at ``source``."""
    root = work / "root"
    root.mkdir(parents=True)
    run([TAR, "-x", "-f", str(base_tar()), "-C", str(root)], timeout=300)
    _copy_distributions(root, source)
    _install_dockwall(root, source)
    tar = work / "image.tar"
    run([TAR, "-c", "-f", str(tar), "-C", str(root), "."], timeout=300)
    shutil.rmtree(root)
    return tar


def import_image(sandbox: Sandbox, tar: Path, tag: str, changes: Sequence[str] = ()) -> str:
    """``docker import`` the tar into the sandbox's engine as ``tag`` (gone with the
    sandbox); ``changes`` are ``--change`` lines (ENTRYPOINT, CMD, ENV). Returns its id."""
    argv = ["import", *(arg for change in changes for arg in ("--change", change))]
    return sandbox.docker(*argv, str(tar), tag, timeout=300).stdout.strip()
