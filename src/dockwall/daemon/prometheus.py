"""`dockwall run --metrics-address HOST:PORT`: the daemon's metrics for Prometheus.

prometheus-client (the official client) serves them, from a registry of dockwall's own (no
process or platform collectors: only what is named here). The kernel's counters are read
when scraped, through a Kernel of their own (the daemon's is not shared across threads):
they are the kernel's, so they start again from 0 when a rule is replaced whole, which
Prometheus takes as a counter reset.
"""

from __future__ import annotations

import ipaddress
import logging
import platform
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from dockwall import __version__
from dockwall.backends.base import DEFAULT_HITS, FamilyHits, by_rule
from dockwall.daemon.metrics import CAUSES, Recorder
from dockwall.errors import DockwallError
from dockwall.logfmt import FIELDS

log = logging.getLogger("dockwall.metrics")
# seconds: a delta write takes about a millisecond, a whole iptables restore tens, a check
# of a big ruleset up to a second
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_address(text: str) -> tuple[str, int]:
    """ "127.0.0.1:9707" or "[::1]:9707": an IP address and a port, never a bare port (which
    would listen on every address) nor a host name (whose addresses can change)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: give an address and a port, like 127.0.0.1:9707")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"{text!r}: {host or 'nothing'} is not an IP address (like 127.0.0.1:9707 or "
            "[::1]:9707)"
        ) from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, like [::1]:9707")
    return str(address), int(port)


class KernelCounters(Collector):
    """The per-rule counters of dockwall's rules, read from the kernel at each scrape."""

    def __init__(self, read: Callable[[], FamilyHits]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        labels = ["rule", "family"]
        packets = CounterMetricFamily(
            "dockwall_rule_allowed_packets",
            "Packets a policy rule let through (of connections it let open, the way they "
            "were opened).",
            labels=labels,
        )
        size = CounterMetricFamily(
            "dockwall_rule_allowed_bytes", "Bytes a policy rule let through.", labels=labels
        )
        dropped = CounterMetricFamily(
            "dockwall_default_dropped_packets",
            "Packets a default verdict (or a quarantine) dropped or rejected.",
        )
        dropped_bytes = CounterMetricFamily(
            "dockwall_default_dropped_bytes",
            "Bytes a default verdict (or a quarantine) dropped or rejected.",
        )
        try:
            hits = self._read()
        except (DockwallError, OSError) as exc:
            log.warning("could not read the kernel's counters", extra={FIELDS: {"error": exc}})
            hits = {}
        for (rule, family), hit in sorted(hits.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if rule != DEFAULT_HITS:
                where = [rule, family.value if family is not None else "any"]
                packets.add_metric(where, hit.packets)
                size.add_metric(where, hit.bytes)
        default = by_rule(hits).get(DEFAULT_HITS)
        dropped.add_metric([], default.packets if default else 0)
        dropped_bytes.add_metric([], default.bytes if default else 0)
        yield from (packets, size, dropped, dropped_bytes)


class Prometheus(Recorder):
    def __init__(self, read_hits: Callable[[], FamilyHits], backend: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (no `_created` series)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._applies = Counter(
            "dockwall_applies", "Writes to the kernel, by result.", ["result"], registry=r
        )
        self._apply_seconds = Histogram(
            "dockwall_apply_duration_seconds",
            "How long a write to the kernel took (planned and written).",
            buckets=BUCKETS,
            registry=r,
        )
        self._repairs = Counter(
            "dockwall_drift_repairs",
            "Writes that put back what someone else changed, by what found it.",
            ["cause"],
            registry=r,
        )
        self._event = Histogram(
            "dockwall_event_to_kernel_seconds",
            "A Docker event's age (from Docker's timestamp) once the kernel reflected it.",
            buckets=BUCKETS,
            registry=r,
        )
        self._docker = Gauge(
            "dockwall_docker_connected", "1 if Docker answered when last asked.", registry=r
        )
        self._last_apply = Gauge(
            "dockwall_last_apply_timestamp_seconds",
            "When dockwall last wrote the kernel successfully (Unix time).",
            registry=r,
        )
        self._last_sync = Gauge(
            "dockwall_last_sync_timestamp_seconds",
            "When the kernel was last confirmed to hold the policy, written or read (Unix time).",
            registry=r,
        )
        self._missed = Counter(
            "dockwall_missed_events",
            "Resyncs that found what Docker's events had not told.",
            registry=r,
        )
        for result in ("ok", "error"):
            self._applies.labels(result)  # exported at 0 from the start
        for cause in CAUSES:
            self._repairs.labels(cause)
        Info("dockwall_build", "dockwall's version.", registry=r).info(
            {"version": __version__, "python": platform.python_version(), "backend": backend}
        )
        r.register(KernelCounters(read_hits))

    def serve(self, address: tuple[str, int]) -> None:
        start_http_server(address[1], address[0], registry=self.registry)
        log.info("serving metrics", extra={FIELDS: {"address": f"{address[0]}:{address[1]}"}})

    def applied(self, seconds: float, ok: bool) -> None:
        self._applies.labels("ok" if ok else "error").inc()
        self._apply_seconds.observe(seconds)
        if ok:
            self._last_apply.set(time.time())

    def in_sync(self) -> None:
        self._last_sync.set(time.time())

    def repaired(self, cause: str) -> None:
        self._repairs.labels(cause).inc()

    def event_in_kernel(self, seconds: float) -> None:
        self._event.observe(max(0.0, seconds))

    def docker(self, connected: bool) -> None:
        self._docker.set(1 if connected else 0)

    def missed_event(self) -> None:
        self._missed.inc()
