"""Bridged traffic through the IP hooks where between has a default: set, remembered, reset;
and a Kernel asks for it before applying such a ruleset, not otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwall.errors import BackendError
from dockwall.host import bridge_filtering


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKWALL_STATE", str(tmp_path / "run" / "applied.json"))
    sysctl = tmp_path / "bridge"
    sysctl.mkdir()
    return sysctl


def test_keys_turned_on_are_remembered_and_turned_off_by_restore(root: Path) -> None:
    (root / "bridge-nf-call-iptables").write_text("0\n")
    (root / "bridge-nf-call-ip6tables").write_text("1\n")
    assert bridge_filtering.ensure(root) == ("bridge-nf-call-iptables",)
    assert (root / "bridge-nf-call-iptables").read_text() == "1\n"
    assert bridge_filtering.ensure(root) == ()  # already on: nothing to do
    assert bridge_filtering.restore(root) == ("bridge-nf-call-iptables",)
    assert (root / "bridge-nf-call-iptables").read_text() == "0\n"
    assert (root / "bridge-nf-call-ip6tables").read_text() == "1\n"  # never dockwall's
    assert bridge_filtering.restore(root) == ()


def test_keys_on_already_are_left_alone_by_restore(root: Path) -> None:
    for key in bridge_filtering.KEYS:
        (root / key).write_text("1\n")
    assert bridge_filtering.ensure(root) == ()
    assert bridge_filtering.restore(root) == ()
    assert all((root / k).read_text() == "1\n" for k in bridge_filtering.KEYS)


def test_the_daemon_applies_the_rest_where_bridged_traffic_cant_be_filtered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No br_netfilter and no way to load it: `apply` refuses (ensure raises), the daemon's
    lenient variant logs what is not governed and lets the rest of the policy go in."""
    monkeypatch.setattr(bridge_filtering, "ROOT", tmp_path / "missing")
    monkeypatch.setattr(bridge_filtering.proc, "run", _no_modprobe)
    monkeypatch.setattr(bridge_filtering.ensure, "__defaults__", (tmp_path / "missing",))
    with pytest.raises(BackendError, match="need bridged traffic to pass the firewall"):
        bridge_filtering.ensure()
    assert bridge_filtering.lenient() == ()
    assert "between containers on one network is NOT governed" in caplog.text


def _no_modprobe(*args: object, **kwargs: object) -> str:
    raise BackendError("modprobe: FATAL: Module br_netfilter not found")
