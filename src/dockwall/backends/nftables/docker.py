"""Which firewall backend the Docker engine itself uses, from its `/info` response. Pure."""

from __future__ import annotations

from collections.abc import Mapping

NOT_REPORTED = "not reported (an engine before API 1.49: iptables)"


def docker_uses_nftables(info: Mapping[str, object]) -> bool:
    """True if the engine programs nftables directly (Docker 29's `--firewall-backend
    nftables`): `/info` then has {"FirewallBackend": {"Driver": "nftables"}}, or
    "nftables+firewalld" under firewalld. Engines before API 1.49 have no FirewallBackend
    field, and "iptables" / "iptables+firewalld" mean iptables: False for all of those."""
    backend = info.get("FirewallBackend")
    if not isinstance(backend, Mapping):
        return False
    driver = backend.get("Driver")
    if not isinstance(driver, str):
        return False
    return driver.split("+", 1)[0].strip().lower() == "nftables"


def docker_firewall_backend(info: Mapping[str, object]) -> str:
    """The firewall backend Docker reports in `/info` ("iptables", "nftables",
    "nftables+firewalld", ...), or NOT_REPORTED (Docker 20.10 does not say)."""
    backend = info.get("FirewallBackend")
    driver = backend.get("Driver") if isinstance(backend, Mapping) else None
    return driver if isinstance(driver, str) and driver else NOT_REPORTED
