"""One exception tree. Internal code raises these; only the CLI turns them into messages."""

from __future__ import annotations

from dataclasses import dataclass


class DockwallError(Exception):
    """Base of every error dockwall reports to the operator."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file, with where it is."""

    where: str  # "policy.yaml:12"
    what: str  # "rule 'lan': from: unknown group 'lna'"

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


class PolicyError(DockwallError):
    """The policy file is invalid. Nothing was touched."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class DockerError(DockwallError):
    """The Docker Engine could not be read."""


class BackendError(DockwallError):
    """The firewall could not be read or written."""


class UnsafeValueError(DockwallError):
    """A value that would reach rule text failed validation."""
