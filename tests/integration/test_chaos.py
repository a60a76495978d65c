"""The short chaos run (bench/chaos.py) on each engine: while containers restart (with
address reuse), dockerd restarts, dockwall's chains, INPUT or the whole ruleset (Docker's
NAT with it) are flushed and dockwall is killed, no disallowed source gets a connection,
and an allowed one gets through after every event.

Two kinds of leak are told apart rather than counted, and both are in the report:
- after someone flushes dockwall's own chains, INPUT or everything, or deletes its jumps:
  until dockwall has put them back. That window is bounded here (repair_bound); it
  is not zero: in iptables nothing can make a deleted jump or a flushed chain drop (see
  README, "Known gaps").
- a completed handshake with no HTTP reply at an address last held by a container the
  stranger may reach (that container dying mid-connection): who answered is unknowable.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dockwall_sandbox import ENGINES

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
SHORT = ["--restarts", "20", "--docker-restarts", "1", "--flushes", "3", "--kills", "1"]
SHORT += ["--input-flushes", "2", "--ruleset-flushes", "1"]
FLUSH_REPAIR_BOUND = 0.25  # seconds: dockwall follows nftables' change stream and repairs
# `nft flush ruleset` deletes every table, Docker's too: `nft monitor` reports each deletion
# before dockwall hears of its own, and has been seen 1.2 s behind; dockwall's drift check
# (every second) then repairs first (0.82 s, once, in CI on Docker 29's nftables backend)
RULESET_REPAIR_BOUND = 1.5


def repair_bound(kind: str) -> float:
    return RULESET_REPAIR_BOUND if kind == "rulesetflush" else FLUSH_REPAIR_BOUND


def unexplained(leak: dict[str, Any], chaos: ModuleType) -> bool:
    flushed = leak["event"] in chaos.FLUSH_KINDS
    in_repair_window = flushed and leak["after_event_s"] <= repair_bound(leak["event"])
    owner_dying = leak["answered_by"] == "(no HTTP reply)" and chaos.allowed(
        leak["side"], leak["port"], leak["last_known_owner"]
    )
    return not (in_repair_window or owner_dying)


def load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dockwall_bench_chaos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("engine", list(ENGINES))
def test_short_chaos_leaks_nothing_beyond_a_flush_repair(
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
    assert [leak for leak in report["leaks"] if unexplained(leak, chaos)] == [], text
    repairs = report["flush_repairs"]
    assert all(r["s"] is not None and r["s"] <= repair_bound(r["kind"]) for r in repairs), text
    for kind in ("restart", "reuse", "dockerd", "flush", "inputflush", "rulesetflush", "kill"):
        after = report["allowed_after_event"][kind]
        assert after["events"] > 0, (kind, text)
        assert after["with_success"] == after["events"], (kind, text)
    assert report["dockwall_unexpected_exits"] == [], text
    assert code in (0, 1), text  # 1: the strict count (every leak) is not zero
