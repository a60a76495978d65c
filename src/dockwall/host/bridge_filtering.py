"""Bridged traffic through the firewall's IP hooks (br_netfilter), for rules between
containers on one network. The edge.

Two containers on one Docker network talk through the bridge (layer 2): their packets reach
the IP forward hook, where dockwall's rules are, only with the br_netfilter module loaded
and net.bridge.bridge-nf-call-iptables (and -ip6tables) set to 1 in Docker's network
namespace. Docker 20.10 loads the module at start (and its default is 1); Docker 27.3 and
later load it only for networks with icc off or without the userland proxy. So where
`between` has a default, dockwall loads the module and sets both to 1 before its rules go
in. `dockwall apply` refuses (nothing changed) if it can't: the operator is there to load
the module. `dockwall run` applies the rest anyway and logs an error (see `lenient`): not
applying would leave every container open to everyone until someone noticed. The keys it
turned on are remembered beside the apply record, and `dockwall remove` turns them off.

Setting them makes every bridge of that network namespace (libvirt's, LXD's too) pass
bridged IP traffic through iptables and nftables' ip/ip6/inet hooks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dockwall import proc, record
from dockwall.errors import BackendError

ROOT = Path("/proc/sys/net/bridge")
KEYS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
MODPROBE_TIMEOUT = 10.0
MARK = "bridge-filtering.json"  # beside the apply record: the keys dockwall turned on

log = logging.getLogger(__name__)


def _mark() -> Path:
    return record.path().parent / MARK


def ensure(root: Path = ROOT) -> tuple[str, ...]:
    """Load br_netfilter if its keys are missing and set both to 1; the keys changed."""
    if not root.is_dir():
        try:
            proc.run(["modprobe", "br_netfilter"], timeout=MODPROBE_TIMEOUT)
        except BackendError as exc:
            raise BackendError(f"{NEEDED}: modprobe br_netfilter failed: {exc}") from None
    if not root.is_dir():
        raise BackendError(f"{NEEDED}: {root} is missing after modprobe br_netfilter")
    changed = []
    for key in KEYS:
        path = root / key
        try:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
                changed.append(key)
        except OSError as exc:
            raise BackendError(f"{NEEDED}: cannot set {path}: {exc.strerror}") from None
    if changed:
        log.warning(
            "bridged traffic now passes the firewall, for rules between containers",
            extra={"fields": {"set": ",".join(f"net.bridge.{k}=1" for k in changed)}},
        )
        _remember(changed)
    return tuple(changed)


def lenient() -> tuple[str, ...]:
    """ensure, for the daemon: where bridged traffic can't be put through the firewall, the
    rest of the policy still goes in, and the error says what is not governed."""
    try:
        return ensure()
    except BackendError as exc:
        log.error(
            "traffic between containers on one network is NOT governed (the rest of the "
            "policy is applied)",
            extra={"fields": {"error": exc}},
        )
        return ()


def restore(root: Path = ROOT) -> tuple[str, ...]:
    """Turn off again the keys ensure turned on (dockwall remove); the keys changed."""
    mark = _mark()
    try:
        keys = [k for k in json.loads(mark.read_text()) if k in KEYS]
    except (OSError, ValueError, TypeError):
        return ()
    for key in keys:
        try:
            (root / key).write_text("0\n")
        except OSError as exc:
            raise BackendError(f"cannot reset {root / key}: {exc.strerror}") from None
    mark.unlink(missing_ok=True)
    return tuple(keys)


def _remember(keys: list[str]) -> None:
    mark = _mark()
    try:
        known = set(json.loads(mark.read_text()))
    except (OSError, ValueError, TypeError):
        known = set()
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(sorted(known | set(keys))))


NEEDED = (
    "rules between containers on one network need bridged traffic to pass the firewall "
    "(br_netfilter, net.bridge.bridge-nf-call-iptables=1); nothing was changed"
)
