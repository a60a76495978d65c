"""Which backend a command gets: "auto" is resolved once, by detection, and never by default.

The host's tools (shutil.which) and Docker's /info are replaced; nothing is read or written.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from dockwall.backends.iptables.backend import IptablesBackend
from dockwall.backends.nftables import NftablesBackend
from dockwall.cli import app
from dockwall.errors import DockerError
from dockwall.host import snapshot
from dockwall.model.policy import Policy, load_policy

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy.yaml"
ALL_TOOLS = frozenset({"iptables-restore", "ipset", "nft"})


def policy_saying(backend: str) -> Policy:
    return replace(load_policy(EXAMPLE), backend=backend)


def host(
    monkeypatch: pytest.MonkeyPatch, tools: frozenset[str], docker: str | None
) -> list[str | None]:
    """A host with `tools` on PATH and a Docker whose /info names `docker` as its firewall
    backend (None: Docker can't be reached). Returns the Docker hosts that were asked."""
    asked: list[str | None] = []
    monkeypatch.setattr(
        app.shutil, "which", lambda tool: f"/usr/sbin/{tool}" if tool in tools else None
    )

    def connect(docker_host: str | None) -> str | None:
        asked.append(docker_host)
        if docker is None:
            raise DockerError("cannot reach Docker")
        return docker_host

    monkeypatch.setattr(snapshot, "connect", connect)
    monkeypatch.setattr(
        snapshot, "engine_info", lambda client: {"FirewallBackend": {"Driver": docker}}
    )
    return asked


@pytest.mark.parametrize(
    ("name", "kind"), [("iptables", IptablesBackend), ("nftables", NftablesBackend)]
)
def test_backend_by_name(name: app.BackendName, kind: type) -> None:
    made = app.backend(name)
    assert isinstance(made.backend, kind) and made.name == name


@pytest.mark.parametrize("name", ["auto", "", "iptable", "nft", "IPTABLES"])
def test_backend_refuses_anything_else_and_never_falls_back_to_iptables(name: str) -> None:
    with pytest.raises(ValueError, match="is not a firewall backend") as raised:
        app.backend(name)  # type: ignore[arg-type]
    assert "choose_backend" in str(raised.value)


@pytest.mark.parametrize("asked", ["iptables", "nftables"])
def test_an_asked_backend_wins_over_the_policy_and_asks_no_one(
    monkeypatch: pytest.MonkeyPatch, asked: str
) -> None:
    docker = host(monkeypatch, ALL_TOOLS, "nftables")
    other = "nftables" if asked == "iptables" else "iptables"
    assert app.choose_backend(asked, policy_saying(other), "tcp://docker:2375") == asked
    assert docker == []


def test_the_policy_decides_when_the_command_line_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docker = host(monkeypatch, ALL_TOOLS, "nftables")
    assert app.choose_backend(None, policy_saying("iptables"), None) == "iptables"
    assert docker == []


@pytest.mark.parametrize(
    ("asked", "policy"),
    [("auto", policy_saying("iptables")), (None, policy_saying("auto")), (None, None)],
)
def test_auto_asks_the_docker_host_the_command_reads(
    monkeypatch: pytest.MonkeyPatch, asked: str | None, policy: Policy | None
) -> None:
    docker = host(monkeypatch, ALL_TOOLS, "nftables+firewalld")
    assert app.choose_backend(asked, policy, "unix:///run/sandbox/docker.sock") == "nftables"
    assert docker == ["unix:///run/sandbox/docker.sock"]


@pytest.mark.parametrize(
    ("tools", "docker", "expected", "docker_asked"),
    [
        (ALL_TOOLS, "iptables", "iptables", True),
        (ALL_TOOLS, "nftables", "nftables", True),
        (ALL_TOOLS, None, "iptables", True),  # Docker unreachable: iptables, as Docker's default
        (frozenset({"ipset", "nft"}), "iptables", "nftables", False),  # no iptables-restore
        (frozenset({"iptables-restore", "nft"}), "iptables", "nftables", False),  # no ipset
        (frozenset({"ipset"}), "nftables", "nftables", True),  # neither tool: Docker decides
        (frozenset(), None, "iptables", True),
    ],
)
def test_detect_backend(
    monkeypatch: pytest.MonkeyPatch,
    tools: frozenset[str],
    docker: str | None,
    expected: str,
    docker_asked: bool,
) -> None:
    asked = host(monkeypatch, tools, docker)
    assert app.detect_backend(None) == expected
    assert asked == ([None] if docker_asked else [])


def test_choose_backend_always_names_a_backend_it_can_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every way of asking, on every host: the answer is a backend, never "auto"."""
    toolsets = [frozenset(c) for n in range(4) for c in itertools.combinations(ALL_TOOLS, n)]
    policies = [None, *(policy_saying(b) for b in app.BACKENDS)]
    for tools, docker, asked, policy in itertools.product(
        toolsets, ["iptables", "nftables", None], [None, *app.BACKENDS], policies
    ):
        host(monkeypatch, tools, docker)
        name = app.choose_backend(asked, policy, None)
        assert name in ("iptables", "nftables")
        assert app.backend(name).name == name
