"""NftablesBackend against a fake nft: what it runs, and when it runs nothing."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

import pytest

from dockwall import proc
from dockwall.backends.base import Backend
from dockwall.backends.nftables import NftablesBackend, model, transaction
from dockwall.errors import BackendError
from dockwall.packets import Outcome, Packet
from dockwall.values import Proto
from tests.unit.test_nftables_readback import SEED_LISTING, seed_ruleset


class FakeNft:
    """Holds the seed table once something was written; records every nft call."""

    def __init__(self, installed: bool = False, refuse: bool = False) -> None:
        self.installed, self.refuse = installed, refuse
        self.calls: list[list[str]] = []
        self.writes: list[str] = []

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout: float = 0) -> str:
        assert timeout > 0
        self.calls.append(list(argv))
        if list(argv[:2]) == ["nft", "-j"]:
            if not self.installed:
                raise BackendError(
                    "nft -j list table inet dockwall failed: Error: No such file or directory"
                )
            return json.dumps({"nftables": SEED_LISTING})
        assert list(argv) == ["nft", "-f", "-"] and stdin is not None
        if self.refuse:
            raise BackendError("nft -f - failed: Error: Could not process rule")
        self.writes.append(stdin)
        self.installed = "delete table inet dockwall\ntable" in stdin
        return ""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    nft = FakeNft()
    monkeypatch.setattr(proc, "run", nft.run)
    return nft


def test_it_is_a_backend() -> None:
    backend: Backend = NftablesBackend()
    assert backend.name == "nftables"


def test_apply_once_then_nothing_to_do(fake: FakeNft) -> None:
    backend = NftablesBackend()
    change = backend.plan(seed_ruleset())
    assert change.pending
    backend.apply(change)
    assert len(fake.writes) == 1  # one transaction for both families
    again = NftablesBackend().plan(seed_ruleset())
    assert not again.pending
    NftablesBackend().apply(again)
    assert len(fake.writes) == 1


def test_a_trusted_plan_reads_nothing(fake: FakeNft) -> None:
    backend = NftablesBackend()
    backend.apply(backend.plan(seed_ruleset()))
    reads = len(fake.calls)
    assert not backend.plan(seed_ruleset(), fresh=False).pending
    assert len(fake.calls) == reads
    assert not backend.plan(seed_ruleset(), fresh=True).pending
    assert len(fake.calls) == reads + 1


def test_a_refused_transaction_says_nothing_changed(fake: FakeNft) -> None:
    fake.refuse = True
    backend = NftablesBackend()
    with pytest.raises(BackendError, match="nothing was changed"):
        backend.apply(backend.plan(seed_ruleset()))


def test_remove_deletes_the_table_and_only_it(fake: FakeNft) -> None:
    fake.installed = True
    backend = NftablesBackend()
    backend.apply(backend.plan_remove())
    assert fake.writes == ["table inet dockwall {}\ndelete table inet dockwall\n"]
    assert not backend.plan_remove().pending


def test_hits_and_decide(fake: FakeNft) -> None:
    backend = NftablesBackend()
    assert backend.hits() == {}
    stranger = Packet(
        ipaddress.ip_address("198.51.100.99"),
        ipaddress.ip_address("192.0.2.130"),
        "eth0",
        "br-5e3f0c1a2b4d",
        Proto.TCP,
        5432,
    )
    decided, in_sync = backend.decide(seed_ruleset(), [stranger])
    assert decided[0].outcome is Outcome.NOT_INSTALLED and not in_sync
    fake.installed = True
    decided, in_sync = backend.decide(seed_ruleset(), [stranger])
    assert decided[0].outcome is Outcome.DROPPED and in_sync
    assert set(backend.hits()) == {"admins", "lan", "public-web", "(default)"}


def test_only_changed_sets_are_refilled_when_nothing_else_differs() -> None:
    rule = model.Rule(("ip daddr @dst4-web", "counter", "accept"), "dockwall:web")
    chain = model.Chain("governed", (rule,))
    old = model.table(
        [
            model.nft_set("dst4-web", "ipv4_addr", ["192.0.2.2"]),
            model.nft_set("src4-big", "ipv4_addr", ["198.51.100.0/24"]),
        ],
        [chain],
    )
    new = model.table(
        [
            model.nft_set("dst4-web", "ipv4_addr", ["192.0.2.2", "192.0.2.9"]),
            model.nft_set("src4-big", "ipv4_addr", ["198.51.100.0/24"]),
        ],
        [chain],
    )
    assert transaction.elements_only(old, new) == (
        "flush set inet dockwall dst4-web\n"
        "add element inet dockwall dst4-web { 192.0.2.2, 192.0.2.9 }\n"
    )
    other = model.table(list(new.sets), [model.Chain("governed", ())])
    assert transaction.elements_only(old, other) == ""
    assert transaction.to_apply(old, new).families[0].payload.startswith("flush set")
