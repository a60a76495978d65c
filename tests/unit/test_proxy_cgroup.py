"""dockerd's cgroup (where docker-proxy's sockets live): read from /proc, written for nft,
read back from nft's JSON, recorded, kept while Docker is away."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockwall import record
from dockwall.backends.nftables import readback, render
from dockwall.compile.compiler import closed, compile_policy
from dockwall.errors import UnsafeValueError
from dockwall.host import proxy_sockets
from dockwall.model.hoststate import HostState
from dockwall.model.policy import load_policy
from dockwall.model.values import Proto, ProxyCgroup

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
FIXTURE = Path(__file__).parent / "fixtures" / "nft-proxy-cgroup.json"
# recorded from the kernel (nft 1.0.6): render.render(RULESET) written with `nft -f`, then
# `nft -j list table inet dockwall`; the cgroup existed at /sys/fs/cgroup/unified/...
RECORDED = ProxyCgroup(
    "unified/dwcg-test/inner", 2, ((Proto.TCP, 7002), (Proto.TCP, 7003), (Proto.UDP, 53))
)


def mountinfo(mount: Path) -> str:
    return (
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        f"35 24 0:30 / {mount} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )


HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid ...\n"


def entry(local: str, state: str, inode: str) -> str:
    """A line of /proc/net/tcp: sl local rem st queues timer retransmits uid timeout inode."""
    return f"   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 0 0 0 {inode} 1\n"


def fake_host(tmp_path: Path, cgroup: str) -> tuple[Path, Path]:
    """A /proc with dockerd (pid 100, its API on 2375/tcp, Swarm's 7946/udp, and for a
    moment 9091/tcp, a container's published port it is handing to docker-proxy), one
    docker-proxy (pid 101, on 9090/tcp) and a containerd dockerd started (pid 102, on
    1234/tcp), all in `cgroup` under a hybrid host's cgroup v2 mount
    (<tmp>/sys/fs/cgroup/unified)."""
    proc, mount = tmp_path / "proc", tmp_path / "sys" / "fs" / "cgroup" / "unified"
    folder = mount / cgroup.strip("/")
    folder.mkdir(parents=True)
    (folder / "cgroup.procs").write_text("100\n101\n102\n")
    processes = ((100, "dockerd", "555"), (101, "docker-proxy", "666"), (102, "containerd", "777"))
    for pid, comm, inode in processes:
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(f"{comm}\n")
        (proc / str(pid) / "cgroup").write_text(f"1:name=systemd:/\n0::{cgroup}\n")
        os.symlink(f"socket:[{inode}]", proc / str(pid) / "fd" / "3")
        os.symlink("/dev/null", proc / str(pid) / "fd" / "0")
        (proc / str(pid) / "cmdline").write_bytes(f"{comm}\0-H\0tcp://0.0.0.0:2375\0".encode())
    net = proc / "100" / "net"
    net.mkdir()
    (net / "tcp").write_text(
        HEAD
        + entry("00000000:0947", "0A", "555")  # dockerd listens on 2375
        + entry("00000000:2382", "0A", "666")  # docker-proxy on 9090
        + entry("0100007F:1F90", "01", "555")  # a connection of dockerd's: not listening
        + entry("00000000:2383", "0A", "555")  # dockerd, for a moment: 9091, published
        + entry("00000000:04D2", "0A", "777")  # containerd on 1234
    )
    (net / "udp").write_text(HEAD + entry("00000000:1F0A", "07", "555"))  # 7946/udp
    return proc, mount


def test_dockerds_cgroup_as_nft_names_it_with_its_own_ports_not_published_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, mount = fake_host(tmp_path, "/system.slice/docker.service")
    monkeypatch.setattr(proxy_sockets, "CGROUP_FS", mount.parent)
    found = proxy_sockets.of_process(100, mountinfo(mount), proc)
    own = ((Proto.TCP, 1234), (Proto.TCP, 2375), (Proto.UDP, 7946))
    assert found == ProxyCgroup("unified/system.slice/docker.service", 2, own)
    (proc / "100" / "cmdline").write_bytes(b"dockerd\0--host=unix:///run/docker.sock\0")
    found = proxy_sockets.of_process(100, mountinfo(mount), proc)
    assert found is not None and found.own == ((Proto.TCP, 1234), (Proto.UDP, 7946))


def test_no_cgroup_where_it_cannot_be_matched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root cgroup matches every socket; a mount nft can't name; no cgroup v2."""
    proc, mount = fake_host(tmp_path, "/")
    monkeypatch.setattr(proxy_sockets, "CGROUP_FS", mount.parent)
    assert proxy_sockets.of_process(100, mountinfo(mount), proc) is None
    assert proxy_sockets.of_process(100, mountinfo(tmp_path / "elsewhere"), proc) is None
    assert proxy_sockets.of_process(100, mountinfo(mount).replace("cgroup2", "tmpfs"), proc) is None
    assert proxy_sockets.find(None) is None
    assert proxy_sockets.find(str(tmp_path / "no-such.sock")) is None


def test_a_cgroup_name_dockwall_does_not_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, mount = fake_host(tmp_path, '/system.slice/x"y; drop')
    monkeypatch.setattr(proxy_sockets, "CGROUP_FS", mount.parent)
    with pytest.raises(UnsafeValueError):
        proxy_sockets.of_process(100, mountinfo(mount), proc)
    for path, level in (("a/../b", 3), ("unified", 0), ("system.slice/docker.service", 1)):
        with pytest.raises(UnsafeValueError):
            ProxyCgroup(path, level)
    with pytest.raises(UnsafeValueError):
        ProxyCgroup("docker", 1, ((Proto.TCP, 0),))


def test_render_sends_unseen_docker_proxy_ports_to_the_proxy_chain_but_dockerds_own() -> None:
    rs = compile_policy(
        load_policy(EXAMPLE),
        HostState((), (), frozenset({"eth0"}), proxy_cgroup=RECORDED),
    ).ruleset
    chain = render.render(rs).chain("input")
    assert chain is not None
    sock = 'socket cgroupv2 level 2 "unified/dwcg-test/inner"'
    assert [r.exprs for r in chain.rules[-3:]] == [
        (sock, "tcp dport { 7002, 7003 }", "accept"),
        (sock, "udp dport 53", "accept"),
        (sock, "goto proxy"),
    ]
    without = compile_policy(load_policy(EXAMPLE), HostState((), (), frozenset({"eth0"})))
    plain = render.render(without.ruleset).chain("input")
    assert plain is not None and not any("socket" in " ".join(r.exprs) for r in plain.rules)


def test_the_kernels_listing_reads_back_as_what_render_wrote() -> None:
    """nft's JSON leaves the cgroup's level out; read back, the table equals the rendering
    (no endless repair), and a different cgroup does not."""
    rs = compile_policy(
        load_policy(EXAMPLE),
        HostState((), (), frozenset({"eth0", "eth1"}), proxy_cgroup=RECORDED),
    ).ruleset
    installed = readback.parse(FIXTURE.read_text()).table
    assert installed == render.render(rs)
    other = ProxyCgroup("unified/dwcg-test", 1, RECORDED.own)
    moved = compile_policy(
        load_policy(EXAMPLE),
        HostState((), (), frozenset({"eth0", "eth1"}), proxy_cgroup=other),
    ).ruleset
    assert installed != render.render(moved)


def test_recorded_and_kept_while_docker_is_away() -> None:
    rs = compile_policy(
        load_policy(EXAMPLE), HostState((), (), frozenset(), proxy_cgroup=RECORDED)
    ).ruleset
    assert record._from_ruleset(record._ruleset(rs)) == rs
    assert closed(load_policy(EXAMPLE), (), RECORDED).proxy_cgroup == RECORDED
    assert closed(load_policy(EXAMPLE), ()).proxy_cgroup is None
