"""Drop logging with real packets: turned-away connections show in the kernel log with a
prefix naming dockwall and the rule, rate-limited.

The kernel only logs from network namespaces other than the first when
net.netfilter.nf_log_all_netns is 1; the test turns it on for its duration and puts the old
value back.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dockwall_sandbox import SeededSandbox
from dockwall_sandbox.dockwall_cli import dockwall

pytestmark = pytest.mark.integration

ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
POLICY = """version: 1
log: {rate: 100/second, burst: 100}
rules:
  - name: public-web
    from: any
    via: eth0
    to: {container: www-nginx}
    ports: [80/tcp]
    log: true
"""
STRANGER = IPv4Address("198.51.100.99")
WAN_HOST = IPv4Address("198.51.100.1")


def kernel_log() -> set[str]:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=True)
    return set(out.stdout.splitlines())


@pytest.fixture
def logging_on() -> Iterator[None]:
    old = ALL_NETNS.read_text()
    ALL_NETNS.write_text("1")
    try:
        yield
    finally:
        ALL_NETNS.write_text(old)


def test_drops_are_logged_with_the_rule_name(
    seeded_sandbox: SeededSandbox, logging_on: None, tmp_path: Path
) -> None:
    box = seeded_sandbox.sandbox
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert dockwall(box, "apply", policy=policy).returncode == 0
    try:
        before = kernel_log()
        reached = box.probe_auto(
            [(STRANGER, WAN_HOST, 80), (STRANGER, WAN_HOST, 443), (STRANGER, WAN_HOST, 8080)]
        )
        assert reached == [True, False, False]
        time.sleep(0.2)
        new = kernel_log() - before
        to_web = [ln for ln in new if "dockwall:public-web " in ln and "SRC=198.51.100.99" in ln]
        other = [ln for ln in new if "dockwall:default " in ln and "SRC=198.51.100.99" in ln]
        assert any("DPT=443" in ln for ln in to_web), new
        assert any("DPT=80 " in ln for ln in other), new  # admin-app's container port
        assert not any("DPT=443" in ln for ln in other), "logged twice"
    finally:
        dockwall(box, "remove")
