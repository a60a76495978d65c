"""A Python child the harness starts imports the dockwall and the harness its parent imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dockwall
import dockwall_sandbox
from dockwall_sandbox.pythonpath import child_env, roots

CHILD = (  # both __init__s import the stdlib only, so -S (no site-packages) can import them
    "import json, dockwall, dockwall_sandbox;"
    "print(json.dumps([dockwall.__file__, dockwall_sandbox.__file__]))"
)


def test_roots_are_the_folders_this_process_imports_from() -> None:
    assert roots() == tuple(
        dict.fromkeys(
            str(Path(m.__file__).resolve().parents[1]) for m in (dockwall, dockwall_sandbox)
        )
    )


def test_child_env_puts_the_roots_ahead_and_keeps_the_rest() -> None:
    env = child_env({"PYTHONPATH": "/elsewhere", "KEEP": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [*roots(), "/elsewhere"]
    assert env["KEEP"] == "1"
    assert child_env({})["PYTHONPATH"].split(os.pathsep) == list(roots())


def test_a_child_with_no_site_packages_imports_the_parents_files(tmp_path: Path) -> None:
    """`-S` leaves out the venv's installs: PYTHONPATH alone must lead to the same files."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", CHILD],
        env=child_env({"PATH": os.defpath}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    child_files = [str(Path(f).resolve()) for f in json.loads(done.stdout)]
    assert child_files == [str(Path(m.__file__).resolve()) for m in (dockwall, dockwall_sandbox)]
