"""firewalld's `Reloaded` signal makes `dockwall run` check at once, not at the next drift
check. A real D-Bus daemon (a private "system" bus of the test's own) carries a real signal;
firewalld itself is not run here (it would take over the host's firewall), so the signal
is sent with dbus-send, exactly as firewalld emits it after a reload."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockwall_sandbox import SeededSandbox
from dockwall_sandbox.dockwall_cli import RunningDaemon, dockwall
from tests.integration.test_daemon import dockwall_rules, flush_own_chain

pytestmark = pytest.mark.integration

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="*"/>
    <allow receive_type="*"/>
    <allow send_destination="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(tmp_path: Path) -> Iterator[str]:
    socket = tmp_path / "system_bus_socket"
    config = tmp_path / "bus.conf"
    config.write_text(CONFIG.replace("{socket}", str(socket)))
    bus = subprocess.Popen(
        ["dbus-daemon", "--nofork", f"--config-file={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket.exists(), "dbus-daemon did not start"
        yield f"unix:path={socket}"
    finally:
        bus.terminate()
        bus.wait(10)


def test_reloaded_signal_triggers_an_immediate_repair(
    seeded_sandbox: SeededSandbox, system_bus: str, tmp_path: Path
) -> None:
    box = seeded_sandbox.sandbox
    policy = tmp_path / "policy.yaml"
    policy.write_text((Path(__file__).parents[2] / "examples" / "policy.yaml").read_text())
    dockwall(box, "remove")
    env = {"DBUS_SYSTEM_BUS_ADDRESS": system_bus}
    daemon = RunningDaemon(
        box, policy, tmp_path / "d.log", "--check-interval", "30", "--no-watch-kernel", env=env
    )
    try:
        assert daemon.wait_for("listening for firewalld reloads"), daemon.log()
        assert daemon.wait_for("msg=running"), daemon.log()
        before = dockwall_rules(seeded_sandbox)
        flush_own_chain(seeded_sandbox)  # (nftables on Docker 29's nftables backend: auto)
        assert dockwall_rules(seeded_sandbox) != before
        subprocess.run(
            [
                "dbus-send",
                "--system",
                "--type=signal",
                "/org/fedoraproject/FirewallD1",
                "org.fedoraproject.FirewallD1.Reloaded",
            ],
            env={"DBUS_SYSTEM_BUS_ADDRESS": system_bus},
            check=True,
            timeout=10,
        )
        start = time.monotonic()
        while dockwall_rules(seeded_sandbox) != before and time.monotonic() - start < 5:
            time.sleep(0.02)
        took = time.monotonic() - start
        assert dockwall_rules(seeded_sandbox) == before, daemon.log()
        assert took < 1.0, took  # the poll is 30 s away: the signal did it
        assert "drift" in daemon.log()
    finally:
        daemon.stop()
        dockwall(box, "remove")
