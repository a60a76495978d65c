"""The daemon's pure parts: which events matter, batching, change descriptions, log lines."""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import struct
from pathlib import Path

from dockwall.compile import policydiff
from dockwall.daemon import describe, rule_changes
from dockwall.daemon.kernelwatch import Transactions
from dockwall.daemon.triggers import Kind, Trigger, event_trigger, wait
from dockwall.logfmt import FIELDS, LogfmtFormatter
from dockwall.model.hoststate import Container, Endpoint, HostState, PublishedPort
from dockwall.model.ruleset import Allow, Ruleset
from dockwall.model.values import Proto, Verdict

FIXTURES = Path(__file__).parent / "fixtures"


def test_relevant_events_become_triggers_with_docker_time() -> None:
    event = {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": "abc", "Attributes": {"name": "web"}},
        "timeNano": 1_700_000_000_123_000_000,
    }
    trigger = event_trigger(event)
    assert trigger is not None
    assert (trigger.kind, trigger.what) == (Kind.EVENT, "container web start")
    assert abs(trigger.at - 1_700_000_000.123) < 1e-6


def test_irrelevant_events_are_ignored() -> None:
    for action in ("exec_start: sh", "health_status: healthy", "attach", "top"):
        assert event_trigger({"Type": "container", "Action": action}) is None
    assert event_trigger({"Type": "image", "Action": "pull"}) is None
    assert event_trigger({"Type": "network", "Action": "connect"}) is not None


def test_wait_takes_the_whole_burst_at_once() -> None:
    triggers: queue.SimpleQueue[Trigger] = queue.SimpleQueue()
    assert wait(triggers, 0.01) == []
    for n in range(5):
        triggers.put(Trigger(Kind.EVENT, str(n)))
    assert [t.what for t in wait(triggers, 1.0)] == ["0", "1", "2", "3", "4"]
    assert wait(triggers, 0) == []


def host(*containers: Container) -> HostState:
    return HostState(containers, (), frozenset())


def web(cid: str, address: str) -> Container:
    return Container(cid, "web", {}, (Endpoint("bridge", ipaddress.ip_address(address), None),))


def test_host_changes_say_what_happened() -> None:
    before = host(web("a", "192.0.2.2"))
    assert describe.host_changes(None, before) == []
    assert describe.host_changes(before, host(web("a", "192.0.2.5"))) == [
        "container web restarted: 192.0.2.2 -> 192.0.2.5"
    ]
    assert describe.host_changes(before, host(web("b", "192.0.2.2"))) == [
        "container web replaced: 192.0.2.2 -> 192.0.2.2"
    ]
    assert describe.host_changes(before, host()) == ["container web stopped: 192.0.2.2"]
    assert describe.host_changes(host(), before) == ["container web started: 192.0.2.2"]


def test_a_created_container_is_said_created_then_started() -> None:
    port = PublishedPort(None, 9090, 80, Proto.TCP)
    created = host(Container("a", "web", {}, (), (port,), running=False))
    assert describe.host_changes(host(), created) == [
        "container web created: host ports 9090/tcp governed"
    ]
    assert describe.host_changes(created, host(web("a", "192.0.2.5"))) == [
        "container web started: 192.0.2.5"
    ]
    assert describe.host_changes(created, host()) == []  # removed before it started


def test_rule_changes_name_the_rule_and_addresses() -> None:
    def ruleset(*destinations: str) -> Ruleset:
        nets = tuple(ipaddress.ip_network(d) for d in destinations)
        allow = Allow("public-web", 3, ("any",), "eth0", None, nets, None)
        return Ruleset(("docker0",), ("br-",), (allow,), Verdict.DROP)

    assert policydiff.rule_changes(None, ruleset()) == ["rules installed"]
    assert policydiff.rule_changes(ruleset("192.0.2.2/32"), ruleset("192.0.2.5/32")) == [
        "rule public-web updated (+192.0.2.5, -192.0.2.2)"
    ]
    assert policydiff.rule_changes(ruleset("192.0.2.2/32"), ruleset("192.0.2.2/32")) == []
    empty = Ruleset(("docker0",), ("br-",), (), Verdict.DROP)
    assert policydiff.rule_changes(ruleset(), empty) == ["rule public-web removed"]


def test_log_lines_are_logfmt_and_quote_what_needs_it() -> None:
    record = logging.LogRecord("dockwall", logging.INFO, "f", 1, "rule x updated", None, None)
    setattr(record, FIELDS, {"added": 3, "why": 'a "b"\nc', "age_ms": 1.234})
    line = LogfmtFormatter().format(record)
    assert line.startswith("time=")
    assert 'level=info msg="rule x updated" added=3 why="a \\"b\\"\\nc" age_ms=1.2' in line
    assert "\n" not in line


MONITOR = """add table inet t
# new generation 2 by process 6563 (nft)
add rule ip filter FOO counter packets 0 bytes 0 return
# new generation 4 by process 6571 (iptables-restor)
add element inet dockwall dst4_tcp-web { 192.0.2.9 . 80 }
# new generation 5 by process 700 (python3)
add rule ip filter DOCKER-USER counter packets 0 bytes 0 return
# new generation 6
add chain ip docker-bridges raw-PREROUTING { type filter hook prerouting priority raw; }
add rule ip docker-bridges filter-forward-in__docker0 ct state established,related accept
# new generation 7 by process 6600 (nft)
add rule ip filter DOCKER ip daddr 192.0.2.2 iifname != "docker0" tcp dport 80 accept
add rule ip6 filter DOCKER-ISOLATION-STAGE-1
add chain ip filter DOCKER-CT
# new generation 7 by process 6610 (iptables)
add rule ip filter DOCKER
add rule ip filter FORWARD counter packets 0 bytes 0 accept
# new generation 7 by process 6611 (iptables)
delete table inet dockwall
# new generation 8 by process 6601 (nft)
"""


def test_only_foreign_transactions_on_watched_tables_wake_the_daemon() -> None:
    transactions = Transactions(lambda pid: pid == 700)
    found = [t for t in map(transactions.feed, MONITOR.splitlines()) if t is not None]
    assert found == [
        "add rule ip filter FOO counter packets 0 bytes 0 return "
        "(by process 6571 (iptables-restor))",
        "add rule ip filter DOCKER-USER counter packets 0 bytes 0 return",
        # not Docker 29's own tables, nor Docker's chains behind dockwall's jumps (6610),
        # unless the transaction also wrote elsewhere (6611)
        "add rule ip filter FORWARD counter packets 0 bytes 0 accept (by process 6611 (iptables))",
        "delete table inet dockwall (by process 6601 (nft))",
    ]


def test_the_kernels_change_messages_read_as_nft_monitor_lines() -> None:
    recorded = json.loads((FIXTURES / "nft-events.json").read_text())["datagrams"]
    found = [line for data in recorded for line in rule_changes.lines(bytes.fromhex(data))]
    assert found == [
        "add table inet dockwall",
        "add chain inet dockwall governed",
        "add set inet dockwall src4-admins",
        "add element inet dockwall src4-admins",
        "add element inet dockwall src4-admins",
        "add element inet dockwall src4-admins",
        "add rule inet dockwall governed",
        "# new generation 2 by process 9888 (nft)",
        "add element inet dockwall src4-admins",
        "add element inet dockwall src4-admins",
        "# new generation 3 by process 9889 (nft)",
        "delete rule inet dockwall governed",
        "# new generation 4 by process 9890 (nft)",
        "add table ip6 docker-bridges",
        "# new generation 5 by process 9892 (nft)",
        "add chain ip6 docker-bridges filter-forward",
        "# new generation 6 by process 9906 (nft)",
        "delete set inet dockwall src4-admins",
        "delete chain inet dockwall governed",
        "delete table inet dockwall",
        "# new generation 7 by process 9907 (nft)",
    ]
    transactions = Transactions(lambda pid: pid == 9889)
    assert [t for t in map(transactions.feed, found) if t is not None] == [
        "add table inet dockwall (by process 9888 (nft))",
        "delete rule inet dockwall governed (by process 9890 (nft))",
        "delete set inet dockwall src4-admins (by process 9907 (nft))",
    ]


def test_cut_or_foreign_messages_are_skipped() -> None:
    recorded = json.loads((FIXTURES / "nft-events.json").read_text())["datagrams"]
    whole = bytes.fromhex(recorded[0])
    assert list(rule_changes.lines(whole[:-3])) == list(rule_changes.lines(whole))[:-1]
    route = struct.pack("=IHHII", 20, 24, 0, 0, 0) + b"\0" * 4  # RTM_NEWROUTE: not nftables
    assert list(rule_changes.lines(route + whole)) == list(rule_changes.lines(whole))
    assert list(rule_changes.lines(b"\x01\x00")) == []
