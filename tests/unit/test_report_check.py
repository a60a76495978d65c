"""`check` says what its answer rests on: both backends answer from the current policy
(dockwall.compile.decide) and name where the installed rules differ from its rendering."""

from __future__ import annotations

import pytest

from dockwall.backends.base import IN_SYNC, Sync
from dockwall.cli import report
from dockwall.cli.app import CheckResult


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_out_of_sync_answers_say_what_they_rest_on_and_where(backend: str) -> None:
    sync = Sync(("ipv4 chain DOCKWALL-C1", "ipset dw4-admins"))
    text = report.check_text(CheckResult([], sync, "eth0", backend=backend), "a", "b")
    assert "DIFFER" in text
    assert "in ipv4 chain DOCKWALL-C1, ipset dw4-admins:" in text
    assert "answered from the current policy, not the installed rules" in text


def test_a_long_list_of_differences_is_cut_and_counted() -> None:
    sync = Sync(tuple(f"set s{n}" for n in range(9)))
    text = report.check_text(CheckResult([], sync, "eth0", backend="nftables"), "a", "b")
    assert "set s4 and 4 more:" in text and "set s5" not in text


def test_differences_are_printable_whatever_the_kernel_held() -> None:
    sync = Sync(("not dockwall's: chain \x1b[2Jx",))
    text = report.check_text(CheckResult([], sync, "eth0", backend="nftables"), "a", "b")
    assert "\x1b" not in text and "chain ?[2Jx" in text


def test_in_sync_answers_say_the_rules_match() -> None:
    text = report.check_text(CheckResult([], IN_SYNC, "eth0", backend="nftables"), "a", "b")
    assert "the installed rules match the policy" in text and "answered" not in text
