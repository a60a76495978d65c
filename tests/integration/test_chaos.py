"""The short chaos run (bench/chaos.py) on each engine: while containers restart (with
address reuse), dockerd restarts, dockwall's chains are flushed and dockwall is killed, no
disallowed source gets a connection, and an allowed one gets through after every event."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from dockwall_sandbox import ENGINES

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
SHORT = ["--restarts", "20", "--docker-restarts", "1", "--flushes", "3", "--kills", "1"]


def load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dockwall_bench_chaos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("engine", list(ENGINES))
def test_short_chaos_leaks_nothing(
    engine: str,
    require_engine: Callable[[str], None],
    leftovers_removed: list[str],
    tmp_path: Path,
) -> None:
    require_engine(engine)
    chaos = load_chaos()
    code = chaos.main(["--engine", engine, *SHORT, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    text = (tmp_path / "report.txt").read_text()
    assert report["event_errors"] == [], text
    assert report["attempts"]["deny"] > 0 and report["attempts"]["allow"] > 0, text
    assert report["leaks"] == [], text
    for kind in ("restart", "reuse", "dockerd", "flush", "kill"):
        after = report["allowed_after_event"][kind]
        assert after["events"] > 0, (kind, text)
        assert after["with_success"] == after["events"], (kind, text)
    assert report["dockwall_unexpected_exits"] == [], text
    assert code == 0, text
