"""NftablesBackend against a fake nft: what it runs, and when it runs nothing."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from dockwall import proc
from dockwall.backends.base import Backend, Kernel
from dockwall.backends.nftables import NftablesBackend, model, netlink, transaction
from dockwall.backends.nftables.backend import differences
from dockwall.errors import BackendError
from dockwall.model.packets import Outcome, Packet
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Family, Proto
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
    backend: Backend[Any, Any, Any] = NftablesBackend()
    assert backend.name == "nftables"


def test_apply_once_then_nothing_to_do(fake: FakeNft) -> None:
    backend = Kernel(NftablesBackend())
    change = backend.plan(seed_ruleset())
    assert change.pending
    backend.apply(change)
    assert len(fake.writes) == 1  # one transaction for both families
    again = Kernel(NftablesBackend()).plan(seed_ruleset())
    assert not again.pending
    Kernel(NftablesBackend()).apply(again)
    assert len(fake.writes) == 1


def test_a_trusted_plan_reads_nothing(fake: FakeNft) -> None:
    backend = Kernel(NftablesBackend())
    backend.apply(backend.plan(seed_ruleset()))
    reads = len(fake.calls)
    assert not backend.plan(seed_ruleset(), fresh=False).pending
    assert len(fake.calls) == reads
    assert not backend.plan(seed_ruleset(), fresh=True).pending
    assert len(fake.calls) == reads + 1


def test_a_refused_transaction_says_nothing_changed(fake: FakeNft) -> None:
    fake.refuse = True
    backend = Kernel(NftablesBackend())
    with pytest.raises(BackendError, match="nothing was changed"):
        backend.apply(backend.plan(seed_ruleset()))


def test_remove_deletes_the_table_and_only_it(fake: FakeNft) -> None:
    fake.installed = True
    backend = Kernel(NftablesBackend())
    backend.apply(backend.plan_remove())
    assert fake.writes == ["table inet dockwall {}\ndelete table inet dockwall\n"]
    assert not backend.plan_remove().pending


def test_hits_and_decide(fake: FakeNft) -> None:
    backend = Kernel(NftablesBackend())
    assert backend.hits() == {}
    stranger = Packet(
        ipaddress.ip_address("198.51.100.99"),
        ipaddress.ip_address("192.0.2.130"),
        "eth0",
        "br-5e3f0c1a2b4d",
        Proto.TCP,
        5432,
    )
    decided, sync = backend.decide(seed_ruleset(), [stranger])
    assert decided[0].outcome is Outcome.NOT_INSTALLED and not sync.in_sync
    fake.installed = True
    decided, sync = backend.decide(seed_ruleset(), [stranger])
    assert decided[0].outcome is Outcome.DROPPED and sync.in_sync and sync.differs == ()
    assert set(backend.hits()) == {"admins", "lan", "public-web", "(default)"}
    assert {f for _, f in backend.hits_by_family()} >= {Family.V4, Family.V6}


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
    assert transaction.to_apply(old, new).writes.script.startswith("flush set")


class FakeWriter:
    """Stands in for netlink.Writer: records each delta, or refuses it."""

    refuse: ClassVar[bool] = False
    calls: ClassVar[list[list[netlink.SetChange]]] = []

    def write(self, table: str, changes: Sequence[netlink.SetChange], timeout: float) -> None:
        assert table == "dockwall" and timeout > 0
        if FakeWriter.refuse:
            raise BackendError("the kernel refused to delete from set x: No such file")
        FakeWriter.calls.append(list(changes))


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch) -> type[FakeWriter]:
    monkeypatch.setattr(netlink, "Writer", FakeWriter)
    monkeypatch.setattr(FakeWriter, "calls", [])
    monkeypatch.setattr(FakeWriter, "refuse", False)
    return FakeWriter


def with_web_at(*extra: str) -> Ruleset:
    """The seed ruleset with www-nginx also at these addresses (a container came)."""
    rs = seed_ruleset()
    more = tuple(ipaddress.ip_network(a) for a in extra)
    return replace(
        rs,
        allows=tuple(
            replace(a, destinations=(*(a.destinations or ()), *more))
            if a.rule == "public-web"
            else a
            for a in rs.allows
        ),
    )


def test_a_trusted_change_of_elements_is_a_delta_written_over_netlink(
    fake: FakeNft, writer: type[FakeWriter]
) -> None:
    backend = Kernel(NftablesBackend())
    backend.apply(backend.plan(seed_ruleset()))
    calls = len(fake.calls)
    change = backend.plan(with_web_at("192.0.2.9"), fresh=False)
    v4, v6 = change.families
    assert change.change.writes.script == (
        "add element inet dockwall dst4_tcp-public-web { 192.0.2.9 . 80, 192.0.2.9 . 443 }\n"
    )
    assert v4.added == (
        "set dst4_tcp-public-web: element 192.0.2.9 . 80",
        "set dst4_tcp-public-web: element 192.0.2.9 . 443",
    )
    assert not v6.pending and v4.hook == transaction.ELEMENTS
    backend.apply(change)
    assert writer.calls == [
        [
            netlink.SetChange(
                "dst4_tcp-public-web",
                "ipv4_addr . inet_service",
                (),
                ("192.0.2.9 . 80", "192.0.2.9 . 443"),
            )
        ]
    ]
    back = backend.plan(seed_ruleset(), fresh=False)
    assert back.change.writes.script.startswith("delete element inet dockwall dst4_tcp-public-web")
    backend.apply(back)
    assert len(writer.calls) == 2 and len(fake.calls) == calls  # nft neither read nor run
    assert not backend.plan(seed_ruleset(), fresh=False).pending


def test_a_read_back_change_of_elements_refills_the_sets_with_nft(
    fake: FakeNft, writer: type[FakeWriter]
) -> None:
    fake.installed = True
    backend = Kernel(NftablesBackend())
    change = backend.plan(with_web_at("192.0.2.9"))
    assert change.change.writes.script.startswith("flush set inet dockwall dst4_tcp-public-web")
    assert change.change.writes.delta is None  # read back, not trusted: no delta
    backend.apply(change)
    assert writer.calls == [] and fake.writes[-1] == change.change.writes.script


def test_a_refused_delta_replaces_the_table_whole(fake: FakeNft, writer: type[FakeWriter]) -> None:
    backend = Kernel(NftablesBackend())
    backend.apply(backend.plan(seed_ruleset()))
    writer.refuse = True
    backend.apply(backend.plan(with_web_at("192.0.2.9"), fresh=False))
    assert fake.writes[-1].startswith("table inet dockwall {}\ndelete table inet dockwall\n")
    assert "192.0.2.9 . 443" in fake.writes[-1]
    assert not backend.plan(with_web_at("192.0.2.9"), fresh=False).pending


def test_when_the_replacement_fails_too_nothing_is_trusted(
    fake: FakeNft, writer: type[FakeWriter]
) -> None:
    backend = Kernel(NftablesBackend())
    backend.apply(backend.plan(seed_ruleset()))
    writer.refuse, fake.refuse = True, True
    with pytest.raises(BackendError, match="nothing was changed"):
        backend.apply(backend.plan(with_web_at("192.0.2.9"), fresh=False))
    reads = len(fake.calls)
    backend.plan(seed_ruleset(), fresh=False)
    assert len(fake.calls) == reads + 1  # read the kernel again


def test_differences_name_the_chains_and_sets_that_differ() -> None:
    rule = model.Rule(("ip daddr @dst4-web", "counter", "accept"), "dockwall:web")
    wanted = model.table(
        [model.nft_set("dst4-web", "ipv4_addr", ["192.0.2.2"])],
        [model.Chain("governed", (rule,)), model.Chain("proxy", ())],
    )
    assert differences(wanted, wanted) == ()
    installed = model.table(
        [model.nft_set("dst4-web", "ipv4_addr", ["192.0.2.3"])],
        [model.Chain("governed", ()), model.Chain("proxy", ())],
        extras=("chain stranger",),
    )
    assert differences(installed, wanted) == (
        "chain governed",
        "set dst4-web",
        "not dockwall's: chain stranger",
    )
