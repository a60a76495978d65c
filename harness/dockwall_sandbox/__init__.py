"""A real Docker engine in network namespaces, for dockwall's integration tests.

Needs root, the stdlib only, and the engines that ``scripts/setup.sh`` installs.
"""

from ._proc import SandboxError
from .cleanup import cleanup_leftovers
from .containers import ContainerInfo, PortMap, PublishedPort, Scenario
from .engines import ENGINES, Engine, available_engines, unavailable_reason
from .sandbox import ProbeCase, Sandbox, SeededSandbox
from .topology import Side

__all__ = [
    "ENGINES",
    "ContainerInfo",
    "Engine",
    "PortMap",
    "ProbeCase",
    "PublishedPort",
    "Sandbox",
    "SandboxError",
    "Scenario",
    "SeededSandbox",
    "Side",
    "available_engines",
    "cleanup_leftovers",
    "unavailable_reason",
]
