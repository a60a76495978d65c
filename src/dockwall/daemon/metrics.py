"""What the daemon tells about itself as it goes: applies, repairs, events, Docker's state.

Recorder does nothing (`dockwall run` without --metrics-address); daemon.prometheus.Prometheus
exports the same calls."""

from __future__ import annotations

from dockwall.daemon.triggers import Kind, Trigger

# the cause of a drift repair, by what the batch that found it held (first match wins)
_CAUSES = (
    (Kind.KERNEL_CHANGED, "kernel_change"),  # nftables' change stream told of a write
    (Kind.FIREWALL_RELOADED, "firewalld_reload"),
    (Kind.DOCKER_UP, "docker_restart"),  # Docker rewrote its chains and jumps
)
TIMED_CHECK = "timed_check"  # found by reading the kernel at the check interval
CAUSES = (*(cause for _, cause in _CAUSES), TIMED_CHECK)


def repair_cause(batch: list[Trigger]) -> str:
    kinds = {t.kind for t in batch}
    return next((cause for kind, cause in _CAUSES if kind in kinds), TIMED_CHECK)


class Recorder:
    """The daemon's calls, each a no-op here."""

    def applied(self, seconds: float, ok: bool) -> None:
        """A write to the kernel took seconds; ok: it went in (else it was refused)."""

    def in_sync(self) -> None:
        """The kernel was just confirmed to hold the policy (written, or read and found so)."""

    def repaired(self, cause: str) -> None:
        """A write put back what someone else changed (repair_cause)."""

    def event_in_kernel(self, seconds: float) -> None:
        """A Docker event's age (from Docker's timestamp) once the kernel reflected it."""

    def docker(self, connected: bool) -> None:
        """Docker answered (or could not be read)."""

    def missed_event(self) -> None:
        """A resync found what Docker's events had not told."""
