"""The sandbox's engines: what a missing Docker 29 says, and what each one is given."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dockwall_sandbox import engines


def test_a_missing_docker29_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(engines.ENGINES["29"], dockerd=Path("/nonexistent/dockerd"))
    monkeypatch.setitem(engines.ENGINES, "29", gone)
    monkeypatch.setattr(engines.os, "geteuid", lambda: 0)
    reason = engines.unavailable_reason("29")
    assert reason is not None and "/nonexistent/dockerd" in reason
    assert "../shared/engines/docker29/ beside this repository" in reason


def test_docker29_modes_differ_only_in_the_firewall_backend() -> None:
    iptables, nftables = engines.ENGINES["29"], engines.ENGINES["29-nftables"]
    assert json.loads(iptables.daemon_json) == {}
    assert json.loads(nftables.daemon_json) == {"firewall-backend": "nftables"}
    assert nftables.host_sysctls == ("net.ipv4.ip_forward=1",)  # Docker won't set it there
    assert iptables.extra_flags == nftables.extra_flags
    assert "--default-runtime=notime-runc" in iptables.extra_flags
    assert iptables.runtime == engines.DOCKER29_ROOT / "runc-notime"
