"""Run the dockwall command inside a sandbox's Docker host namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .sandbox import Sandbox

SRC = str(Path(__file__).resolve().parents[1])  # the folder holding dockwall and this package


def dockwall(
    sandbox: Sandbox, *args: str, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`dockwall ARGS [-p POLICY] --docker-host <the sandbox's engine>` in the host namespace."""
    argv = [sys.executable, "-m", "dockwall", *args]
    if policy is not None:
        argv += ["-p", str(policy)]
    if args and args[0] != "remove":
        argv += ["--docker-host", sandbox.docker_host]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return sandbox.run_in_host(argv, check=False, env=env, timeout=120)
