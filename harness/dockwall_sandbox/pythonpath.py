"""The environment of a Python child started in a namespace: the same dockwall, the same harness.

A child run as ``sys.executable -m ...`` finds both packages by itself when the interpreter is
the development venv (scripts/venv.sh installs them). The parent may have found them another
way: pytest's ``pythonpath``, or a bench that puts the checkout's folders on ``sys.path`` under
another interpreter. PYTHONPATH names the folders the parent's own imports resolve to, so the
child runs the code its parent runs, whichever way that was.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path


def _root_of(package: str) -> str:
    """The folder that holds `package`, as this interpreter would import it (not importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no {package} to hand to a child process", name=package)
    return str(Path(spec.origin).resolve().parents[1])


def roots() -> tuple[str, ...]:
    """The folders holding dockwall and dockwall_sandbox, each once, dockwall's first."""
    return tuple(dict.fromkeys(_root_of(name) for name in ("dockwall", "dockwall_sandbox")))


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (the process's environment by default) with `roots()` ahead of its PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*roots(), env.get("PYTHONPATH")) if p)
    return env
