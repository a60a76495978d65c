"""Reading only the containers an event is about (snapshot.update), the container ids events
carry, and the daemon's choice between that and a full snapshot (with its resync)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import docker
import pytest

from dockwall.backends.base import Kernel
from dockwall.daemon import loop
from dockwall.daemon.loop import Daemon, Settings
from dockwall.daemon.triggers import Kind, Trigger, event_trigger
from dockwall.host import snapshot
from dockwall.model.hoststate import Container, Endpoint, HostState, Network, PublishedPort
from dockwall.model.policy import parse_policy
from dockwall.model.values import Proto
from tests.unit.test_daemon_loop import POLICY, FakeBackend

A, B, C = "a" * 64, "b" * 64, "c" * 64


def listing(cid: str, name: str, address: str) -> dict[str, Any]:
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": address}}},
    }


class FakeApi:
    timeout = snapshot.API_TIMEOUT

    def __init__(self, running: list[dict[str, Any]]) -> None:
        self.running = running
        self.asked: list[object] = []

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> object:
        self.asked.append(filters)
        if all:
            return []  # none created but not started
        wanted = set((filters or {}).get("id", []))
        return [r for r in self.running if not wanted or r["Id"] in wanted]


def client(running: list[dict[str, Any]]) -> Any:
    made = type("FakeClient", (), {})()
    made.api = FakeApi(running)
    return made


NET = Network("n0", "bridge", "bridge", "docker0", (ipaddress.ip_network("192.0.2.0/24"),))


def container(cid: str, name: str, address: str) -> Container:
    return Container(cid, name, {}, (Endpoint("bridge", ipaddress.ip_address(address), None),))


def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """A daemon on the test policy, with a fake backend, that records nothing."""
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY)
    settings = Settings(policy, None, check_interval=1.0, watch_kernel=False, resync_interval=60)
    made = Daemon(settings, Kernel(FakeBackend()), parse_policy(POLICY, str(policy)))  # type: ignore[arg-type]
    monkeypatch.setattr(loop.record, "save", lambda *args: None)
    return made


def test_update_reads_only_the_containers_asked_for() -> None:
    host = HostState(
        (container(A, "web", "192.0.2.2"), container(B, "db", "192.0.2.3")), (NET,), frozenset()
    )
    fake = client([listing(A, "web", "192.0.2.9"), listing(C, "new", "192.0.2.4")])
    after = snapshot.update(cast(docker.DockerClient, fake), host, [A, B, C])
    by_id = {c.id: c for c in after.containers}
    assert set(by_id) == {A, C}  # B is gone (not running any more)
    assert by_id[A].endpoints[0].ipv4 == ipaddress.ip_address("192.0.2.9")
    assert fake.api.asked[0] == {"id": sorted([A, B, C])}
    untouched = snapshot.update(cast(docker.DockerClient, fake), after, [C])
    assert untouched.containers[0] is after.containers[0]  # A kept as it was


def test_an_odd_container_read_again_replaces_its_quarantine() -> None:
    host = HostState((container(A, "web", "192.0.2.2"),), (NET,), frozenset())
    odd = listing(A, "web", "192.0.2.2") | {"Labels": {"x": ["not", "text"]}}
    after = snapshot.update(cast(docker.DockerClient, client([odd])), host, [A])
    assert after.containers == () and [q.container_id for q in after.quarantined] == [A]
    healed = snapshot.update(
        cast(docker.DockerClient, client([listing(A, "web", "192.0.2.2")])), after, [A]
    )
    assert healed.quarantined == () and [c.id for c in healed.containers] == [A]


def test_events_name_the_container_they_are_about() -> None:
    start = {"Type": "container", "Action": "start", "Actor": {"ID": A, "Attributes": {}}}
    assert event_trigger(start) == Trigger(Kind.EVENT, f"container {A[:12]} start", pytest.approx(
        event_trigger(start).at  # type: ignore[union-attr]
    ), A, "container start")  # fmt: skip
    joined = {"Type": "network", "Action": "connect", "Actor": {"ID": "n" * 64,
              "Attributes": {"container": B, "name": "back"}}}  # fmt: skip
    assert event_trigger(joined).container == B  # type: ignore[union-attr]
    made = {"Type": "network", "Action": "create", "Actor": {"ID": "n" * 64}}
    assert event_trigger(made).container == ""  # type: ignore[union-attr]
    odd = {"Type": "container", "Action": "start", "Actor": {"ID": "../x"}}
    assert event_trigger(odd).container == ""  # type: ignore[union-attr]


def test_the_daemon_reads_only_the_events_containers_and_resyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = daemon(tmp_path, monkeypatch)
    full = HostState((container(A, "web", "192.0.2.2"),), (NET,), frozenset())
    takes: list[bool] = []
    monkeypatch.setattr(made, "_snapshot", lambda fresh: takes.append(fresh) or full)
    made.reconcile([Trigger(Kind.DOCKER_UP, "start")])
    assert takes == [True] and made.host is full
    made._client = cast(docker.DockerClient, client([listing(A, "web", "192.0.2.7")]))
    event = Trigger(Kind.EVENT, "container web start", 0.0, A)
    made.reconcile([event])
    assert takes == [True]  # not a full snapshot: only web was read again
    assert made.host.containers[0].endpoints[0].ipv4 == ipaddress.ip_address("192.0.2.7")
    made.reconcile([Trigger(Kind.EVENT, "network made", 0.0, "")])
    assert takes == [True, False]  # an event about more than one container: everything
    made._next_resync = 0.1  # due: the next batch of container events takes everything
    made.reconcile([event])  # the full snapshot (web at .2) is not what the event told (.7)
    assert takes == [True, False, False] and made.missed == 1
    # With no event at all, the loop makes a RESYNC trigger once one is due; a full snapshot
    # equal to what the daemon holds is no missed event, one that differs is.
    made._next_resync = 0.1
    assert made._resync_due()
    made.reconcile([Trigger(Kind.RESYNC, "periodic resync")])
    assert takes == [True, False, False, False] and made.missed == 1
    assert not made._resync_due()  # the next one is resync_interval away
    made._next_resync = 0.1
    full = HostState((container(A, "web", "192.0.2.5"),), (NET,), frozenset())
    made.reconcile([Trigger(Kind.RESYNC, "periodic resync")])
    assert made.missed == 2 and made.host is full


def test_a_container_that_died_is_not_believed_running_until_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker 20.10 sends a container's die and its network's disconnect while its listing
    still shows it running with its address: seen in chaos runs, where a container given
    that address next was reachable through the old one's allow."""
    made = daemon(tmp_path, monkeypatch)
    full = HostState((container(A, "web", "192.0.2.2"),), (NET,), frozenset())
    monkeypatch.setattr(made, "_snapshot", lambda fresh: full)
    made.reconcile([Trigger(Kind.DOCKER_UP, "start")])
    made._client = cast(docker.DockerClient, client([listing(A, "web", "192.0.2.2")]))
    died = {"Type": "container", "Action": "die", "Actor": {"ID": A, "Attributes": {}}}
    left = {"Type": "network", "Action": "disconnect", "Actor": {"ID": "n" * 64,
            "Attributes": {"container": A, "name": "bridge"}}}  # fmt: skip
    made.reconcile([cast(Trigger, event_trigger(died))])
    assert made.host is not None and made.host.containers == ()
    made.reconcile([cast(Trigger, event_trigger(left))])  # listed running still: not believed
    assert made.host.containers == ()
    made._next_resync = 0.1  # a full snapshot listing it running is not believed either
    made.reconcile([cast(Trigger, event_trigger(left))])
    assert made.host.containers == () and made.missed == 0
    started = {"Type": "container", "Action": "start", "Actor": {"ID": A, "Attributes": {}}}
    made.reconcile([cast(Trigger, event_trigger(started))])
    assert [c.id for c in made.host.containers] == [A]
    made.reconcile([cast(Trigger, event_trigger(died)), cast(Trigger, event_trigger(started))])
    assert [c.id for c in made.host.containers] == [A]  # a restart in one batch: it runs
    made._died[A] = loop.time.monotonic() - loop.DIED_STALE - 1  # long ago: believed
    made.reconcile([cast(Trigger, event_trigger(left))])
    assert [c.id for c in made.host.containers] == [A] and made._died == {}


def test_a_clash_with_a_container_not_read_again_reads_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container read again with an address (or host port) that one kept from before also
    has: the kept one stopped unseen, so every container is read."""
    held = HostState((container(A, "old", "192.0.2.2"),), (NET,), frozenset())
    both = snapshot.update(
        cast(docker.DockerClient, client([listing(B, "new", "192.0.2.2")])), held, [B]
    )
    assert snapshot.clashes(both, [B]) and not snapshot.clashes(both, [])
    apart = snapshot.update(
        cast(docker.DockerClient, client([listing(B, "new", "192.0.2.3")])), held, [B]
    )
    assert not snapshot.clashes(apart, [B])
    port = PublishedPort(None, 9001, 80, Proto.TCP)
    a = replace(container(A, "old", "192.0.2.2"), ports=(port,))
    b = replace(container(B, "new", "192.0.2.3"), ports=(port,))
    assert snapshot.clashes(HostState((a, b), (NET,), frozenset()), [B])
    assert snapshot.without(both, {A}).containers == (both.containers[1],)

    made = daemon(tmp_path, monkeypatch)
    takes: list[HostState] = []
    now = HostState((container(B, "new", "192.0.2.2"),), (NET,), frozenset())
    monkeypatch.setattr(
        made, "_snapshot", lambda fresh: takes.append(held if not takes else now) or takes[-1]
    )
    made.reconcile([Trigger(Kind.DOCKER_UP, "start")])
    made._client = cast(docker.DockerClient, client([listing(B, "new", "192.0.2.2")]))
    made.reconcile([Trigger(Kind.EVENT, "container new start", 0.0, B, "container start")])
    assert len(takes) == 2 and made.host is now  # the clash made a full snapshot
