"""A container image made on the spot from the static busybox (nothing is pulled)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ._proc import SandboxError, run

BUSYBOX = Path("/bin/busybox")
IMAGE = "dwsb/busybox:latest"
INDEX_HTML = b"<html><body>dockwall sandbox</body></html>\n"

# Started as the container command: one busybox httpd per port given, in the
# foreground for the last one so the container lives as long as they do. GET /who
# answers the container's hostname (Docker's default: the first 12 hex digits of its
# id), so a probe can tell which container answered.
WHO_PATH = "/who"
SERVE_SCRIPT = b"""#!/bin/sh
hostname > /www/who 2>/dev/null
last=""
for port in "$@"; do
    if [ -n "$last" ]; then httpd -p "$last" -h /www; fi
    last="$port"
done
exec httpd -f -p "${last:-80}" -h /www
"""


def _applets() -> list[str]:
    out = run([str(BUSYBOX), "--list"]).stdout
    return [name for name in out.split() if name and "/" not in name and name != "busybox"]


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def rootfs_tar() -> bytes:
    """The image's root file system as an uncompressed tar."""
    if not BUSYBOX.exists():
        raise SandboxError(f"{BUSYBOX} is missing: install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "etc", "www", "dev", "proc", "sys"):
            _add_dir(tar, folder)
        _add_dir(tar, "tmp", 0o1777)
        _add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in _applets():
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        _add_file(tar, "bin/serve", SERVE_SCRIPT, 0o755)
        _add_file(tar, "www/index.html", INDEX_HTML, 0o644)
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", 0o644)
        _add_file(tar, "etc/group", b"root:x:0:\n", 0o644)
    return buf.getvalue()
