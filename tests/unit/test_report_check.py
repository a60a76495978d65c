"""`check` says what its answer rests on, per backend: iptables walks the installed rules,
nftables follows the policy (NftablesBackend.decide)."""

from __future__ import annotations

import pytest

from dockwall.cli import report
from dockwall.cli.app import CheckResult


@pytest.mark.parametrize(
    ("backend", "basis"),
    [
        ("iptables", "answered from the installed rules"),
        ("nftables", "answered from the current policy, not the installed rules"),
    ],
)
def test_out_of_sync_answers_say_what_they_rest_on(backend: str, basis: str) -> None:
    text = report.check_text(CheckResult([], False, "eth0", backend=backend), "a", "b")
    assert "DIFFER" in text and basis in text


def test_in_sync_answers_say_the_rules_match() -> None:
    text = report.check_text(CheckResult([], True, "eth0", backend="nftables"), "a", "b")
    assert "the installed rules match the policy" in text and "answered" not in text
