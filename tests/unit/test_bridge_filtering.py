"""Bridged traffic through the IP hooks where between has a default: set, remembered, reset;
and a Kernel asks for it before applying such a ruleset, not otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

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
