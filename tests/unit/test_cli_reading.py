"""The command line's operator side: read-only commands find the policy the last apply used,
their errors speak of nothing changed only where something could have been, and `remove
--backend` takes out one backend's rules."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from dockwall import record
from dockwall.cli import app
from dockwall.cli import commands as cli
from dockwall.errors import PolicyError, Problem
from dockwall.model.hoststate import HostState
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Verdict

EMPTY = Ruleset(("docker0",), ("br-",), (), Verdict.DROP)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An apply record of this test's own, and no default policy file."""
    monkeypatch.setenv("DOCKWALL_STATE", str(tmp_path / "applied.json"))
    monkeypatch.setattr(cli, "DEFAULT_POLICY", tmp_path / "etc" / "policy.yaml")
    return tmp_path


def test_the_record_names_the_policy_by_its_absolute_path(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(state)
    record.save("policy.yaml", "ab" * 32, EMPTY, HostState((), (), frozenset()))
    last = record.load()
    assert last is not None and last.policy == str(state / "policy.yaml")


def test_read_only_commands_use_the_recorded_policy_and_say_so(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = state / "mine.yaml"
    policy.write_text("version: 1\nrules: []\n")
    record.save(str(policy), "ab" * 32, EMPTY, HostState((), (), frozenset()))
    asked: list[Path] = []

    def prepare(path: Path, docker_host: str | None) -> Any:
        asked.append(path)
        raise PolicyError([Problem(str(path), "stop here")])

    monkeypatch.setattr(app, "prepare", prepare)
    for argv in (["status"], ["plan"], ["check", "198.51.100.9", "web"]):
        done = CliRunner().invoke(cli.main, argv)
        assert done.exit_code == cli.EXIT_ERROR
        assert f"policy: {policy} (the one the last apply used)" in done.stderr
        assert "error: the policy is invalid\n" in done.stderr  # read-only: nothing to change
        assert "nothing was changed" not in done.stderr
    assert asked == [policy, policy, policy]
    given = state / "other.yaml"
    done = CliRunner().invoke(cli.main, ["status", "-p", str(given)])
    assert asked[-1] == given and "the one the last apply used" not in done.stderr


def test_without_a_policy_or_a_record_the_message_says_what_to_do(state: Path) -> None:
    done = CliRunner().invoke(cli.main, ["status"])
    assert done.exit_code == cli.EXIT_ERROR
    assert "no policy given, none at" in done.stderr
    assert "give one with -p FILE, or run `dockwall apply -p FILE` first" in done.stderr
    record.save(str(state / "gone.yaml"), "ab" * 32, EMPTY, HostState((), (), frozenset()))
    done = CliRunner().invoke(cli.main, ["plan"])
    assert f"the last apply used {state / 'gone.yaml'}, which is gone" in done.stderr


def test_a_writing_commands_error_still_says_nothing_was_changed(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = state / "bad.yaml"
    bad.write_text("version: 1\nrules: [{name: x, from: nowhere-group}]\n")
    done = CliRunner().invoke(cli.main, ["apply", "-p", str(bad)])
    assert done.exit_code == cli.EXIT_ERROR
    assert "error: the policy is invalid; nothing was changed" in done.stderr


class Installed:
    def __init__(self, name: str, present: dict[str, bool], removed: list[str]) -> None:
        self.name, self.present, self.removed = name, present, removed

    def installed(self) -> bool:
        return self.present[self.name]


def test_remove_backend_takes_out_that_backend_only(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = {"iptables": True, "nftables": True}
    removed: list[str] = []

    def remove(kernel: Any, forget: bool = True) -> Any:
        assert not forget  # the record goes only once nothing of dockwall's is left
        removed.append(kernel.name)
        present[kernel.name] = False
        return SimpleNamespace(pending=True)

    monkeypatch.setattr(app, "backend", lambda name: Installed(name, present, removed))
    monkeypatch.setattr(app, "remove", remove)
    monkeypatch.setattr(app.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(app.bridge_filtering, "restore", lambda: None)
    record.save(str(state / "p.yaml"), "ab" * 32, EMPTY, HostState((), (), frozenset()))
    done = CliRunner().invoke(cli.main, ["remove", "--backend", "nftables"])
    assert done.exit_code == 0 and done.stdout == "removed\n"
    assert removed == ["nftables"] and record.load() is not None  # iptables' rules remain
    done = CliRunner().invoke(cli.main, ["remove", "--backend", "iptables"])
    assert removed == ["nftables", "iptables"] and record.load() is None  # nothing is left
    refused = CliRunner().invoke(cli.main, ["remove", "--backend", "auto"])
    assert refused.exit_code == 2 and "Invalid value for '--backend'" in refused.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_come_from_the_command(shell: str) -> None:
    """The README's completion lines: each shell's script, and one completion through it."""
    env = {"_DOCKWALL_COMPLETE": f"{shell}_source"}
    script = CliRunner().invoke(cli.main, [], env=env, prog_name="dockwall")
    assert script.exit_code == 0 and "_DOCKWALL_COMPLETE" in script.stdout


def test_a_completion_offers_the_commands() -> None:
    env = {"_DOCKWALL_COMPLETE": "bash_complete", "COMP_WORDS": "dockwall st", "COMP_CWORD": "1"}
    done = CliRunner().invoke(cli.main, [], env=env, prog_name="dockwall")
    assert done.stdout.split() == ["plain,status"]
    env |= {"COMP_WORDS": "dockwall remove --backend ", "COMP_CWORD": "3"}
    done = CliRunner().invoke(cli.main, [], env=env, prog_name="dockwall")
    assert done.stdout.split() == ["plain,iptables", "plain,nftables"]
