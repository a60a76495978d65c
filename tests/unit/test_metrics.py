"""`dockwall run --metrics-address`: the address's checks, and the daemon's metrics moving as
it reconciles, repairs and loses Docker (against the fake backend of test_daemon_loop). That
the kernel's counters move with real traffic is proven in tests/integration/test_daemon.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from prometheus_client.exposition import generate_latest

from dockwall.backends.base import DEFAULT_HITS, FamilyHits, Hits
from dockwall.cli import commands as cli
from dockwall.daemon.loop import Daemon
from dockwall.daemon.prometheus import Prometheus, parse_address
from dockwall.daemon.triggers import Kind, Trigger
from dockwall.errors import BackendError, DockerError
from dockwall.model.hoststate import HostState
from dockwall.model.values import Family
from tests.metrics_text import samples
from tests.unit.test_daemon_loop import FakeBackend, daemon, event, host

__all__ = ["daemon"]  # (the fixture, used by name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9707", ("127.0.0.1", 9707)), ("[::1]:9707", ("::1", 9707))],
)
def test_an_address_and_a_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9707", "give an address and a port"),
        (":9707", "nothing is not an IP address"),
        ("localhost:9707", "localhost is not an IP address"),
        ("::1:9707", "in brackets"),
        ("127.0.0.1:0", "give an address and a port"),
        ("127.0.0.1:65536", "give an address and a port"),
        ("127.0.0.1:", "give an address and a port"),
    ],
)
def test_a_bare_port_or_a_name_is_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_address(text)


def test_run_refuses_a_bare_port_before_touching_anything() -> None:
    done = CliRunner().invoke(cli.main, ["run", "-p", "/nonexistent", "--metrics-address", "9707"])
    assert done.exit_code == 2
    assert "give an address and a port" in done.output


def scrape(metrics: Prometheus) -> dict[str, float]:
    """Every sample, by name and labels (`name{k=v,...}`)."""
    return samples(generate_latest(metrics.registry).decode())


KERNEL: FamilyHits = {
    ("web", Family.V4): Hits(3, 180),
    ("web", Family.V6): Hits(2, 160),
    ("admins", None): Hits(1, 60),
    (DEFAULT_HITS, Family.V4): Hits(7, 420),
    (DEFAULT_HITS, None): Hits(1, 80),
}


def test_metrics_follow_applies_repairs_events_and_docker(
    daemon: tuple[Daemon, FakeBackend],
) -> None:
    made, fake = daemon
    metrics = Prometheus(lambda: KERNEL, "fake")
    made.metrics = metrics
    got = scrape(metrics)
    assert got["dockwall_applies_total{result=ok}"] == 0
    assert got["dockwall_drift_repairs_total{cause=timed_check}"] == 0
    info = [k for k in got if k.startswith("dockwall_build_info{backend=fake,python=3.")]
    assert len(info) == 1 and info[0].endswith(",version=0.1.0}") and got[info[0]] == 1

    made.reconcile([event()], read_kernel=True)  # the first apply
    got = scrape(metrics)
    assert got["dockwall_applies_total{result=ok}"] == 1
    assert got["dockwall_apply_duration_seconds_count{}"] == 1
    assert got["dockwall_event_to_kernel_seconds_count{}"] == 1
    assert got["dockwall_docker_connected{}"] == 1
    assert got["dockwall_last_apply_timestamp_seconds{}"] > 0
    assert got["dockwall_drift_repairs_total{cause=timed_check}"] == 0  # not a repair

    fake.wipe()  # someone flushes the rules; nftables' stream tells
    made.check_drift([Trigger(Kind.KERNEL_CHANGED, "nft monitor")])
    fake.wipe()
    made.check_drift([])  # found by the timed check
    made.reconcile([event()], read_kernel=True)  # nothing changed: no write, not a repair
    got = scrape(metrics)
    assert got["dockwall_drift_repairs_total{cause=kernel_change}"] == 1
    assert got["dockwall_drift_repairs_total{cause=timed_check}"] == 1
    assert got["dockwall_applies_total{result=ok}"] == 3
    assert got["dockwall_event_to_kernel_seconds_count{}"] == 2

    fake.refuse = True
    made._snapshot = lambda fresh: host("192.0.2.9")  # type: ignore[method-assign]
    made.reconcile([event()], read_kernel=False)
    got = scrape(metrics)
    assert got["dockwall_applies_total{result=error}"] == 1
    assert got["dockwall_event_to_kernel_seconds_count{}"] == 2  # refused: not in the kernel

    def gone(fresh: bool) -> HostState:
        raise DockerError("connection refused")

    made._snapshot = gone  # type: ignore[method-assign]
    made.reconcile([Trigger(Kind.DOCKER_DOWN, "stream ended")], read_kernel=True)
    assert scrape(metrics)["dockwall_docker_connected{}"] == 0


def test_the_kernel_counters_per_rule_and_family_and_the_defaults() -> None:
    got = scrape(Prometheus(lambda: KERNEL, "fake"))
    assert got["dockwall_rule_allowed_packets_total{family=ipv4,rule=web}"] == 3
    assert got["dockwall_rule_allowed_bytes_total{family=ipv6,rule=web}"] == 160
    assert got["dockwall_rule_allowed_packets_total{family=any,rule=admins}"] == 1
    assert got["dockwall_default_dropped_packets_total{}"] == 8
    assert got["dockwall_default_dropped_bytes_total{}"] == 500
    assert not any("(default)" in k for k in got)


def test_a_kernel_that_cannot_be_read_leaves_the_rest_of_the_scrape() -> None:
    def refused() -> FamilyHits:
        raise BackendError("iptables-save: timed out")

    got = scrape(Prometheus(refused, "fake"))
    assert got["dockwall_default_dropped_packets_total{}"] == 0
    assert "dockwall_applies_total{result=ok}" in got
