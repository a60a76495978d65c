"""Read-back and comparison: canned `nft -j list table inet dockwall` output (recorded from
nft 1.0.6 on kernel 6.x after installing the seed scenario's table) against the rendering."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dockwall.backends.base import DEFAULT_HITS, Change, Hits, by_rule
from dockwall.backends.nftables import model, readback, render, transaction
from dockwall.compile.compiler import compile_policy
from dockwall.model.policy import load_policy
from dockwall.model.ruleset import Ruleset
from dockwall.model.values import Family
from tests.hostfile import load_host

SEED = Path(__file__).parent.parent / "scenarios" / "seed"

SEED_LISTING: list[dict[str, Any]] = [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "dockwall", "handle": 12}},
    {
        "set": {
            "family": "inet",
            "name": "dst4_tcp-public-web",
            "table": "dockwall",
            "type": ["ipv4_addr", "inet_service"],
            "handle": 3,
            "flags": ["interval"],
            "elem": [{"concat": ["192.0.2.2", 80]}, {"concat": ["192.0.2.2", 443]}],
        }
    },
    {
        "set": {
            "family": "inet",
            "name": "dst6_tcp-public-web",
            "table": "dockwall",
            "type": ["ipv6_addr", "inet_service"],
            "handle": 4,
            "flags": ["interval"],
            "elem": [{"concat": ["2001:db8:d0c::2", 80]}, {"concat": ["2001:db8:d0c::2", 443]}],
        }
    },
    {
        "set": {
            "family": "inet",
            "name": "src4-admins",
            "table": "dockwall",
            "type": "ipv4_addr",
            "handle": 5,
            "flags": ["interval"],
            "elem": [{"prefix": {"addr": "198.51.100.10", "len": 31}}],
        }
    },
    {
        "set": {
            "family": "inet",
            "name": "src4-lan",
            "table": "dockwall",
            "type": "ipv4_addr",
            "handle": 6,
            "flags": ["interval"],
            "elem": [{"prefix": {"addr": "203.0.113.0", "len": 28}}],
        }
    },
    {
        "set": {
            "family": "inet",
            "name": "src6-admins",
            "table": "dockwall",
            "type": "ipv6_addr",
            "handle": 7,
            "flags": ["interval"],
            "elem": [{"prefix": {"addr": "2001:db8:100::10", "len": 127}}],
        }
    },
    {
        "set": {
            "family": "inet",
            "name": "src6-lan",
            "table": "dockwall",
            "type": "ipv6_addr",
            "handle": 8,
            "flags": ["interval"],
            "elem": [{"prefix": {"addr": "2001:db8:200::", "len": 124}}],
        }
    },
    {
        "chain": {
            "family": "inet",
            "table": "dockwall",
            "name": "forward",
            "handle": 1,
            "type": "filter",
            "hook": "forward",
            "prio": -10,
            "policy": "accept",
        }
    },
    {"chain": {"family": "inet", "table": "dockwall", "name": "governed", "handle": 2}},
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "forward",
            "handle": 9,
            "expr": [
                {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}},
                {
                    "match": {
                        "op": "in",
                        "left": {"ct": {"key": "state"}},
                        "right": ["established", "related"],
                    }
                },
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "forward",
            "handle": 899,
            "expr": [
                {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "related"}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "forward",
            "handle": 11,
            "expr": [
                {
                    "match": {
                        "op": "==",
                        "left": {"meta": {"key": "iifname"}},
                        "right": {"set": ["br-*", "docker0"]},
                    }
                },
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "forward",
            "handle": 13,
            "expr": [
                {
                    "match": {
                        "op": "==",
                        "left": {"meta": {"key": "oifname"}},
                        "right": {"set": ["br-*", "docker0"]},
                    }
                },
                {"goto": {"target": "governed"}},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 14,
            "comment": "dockwall:admins",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": "@src4-admins",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 15,
            "comment": "dockwall:admins",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                        "right": "@src6-admins",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 16,
            "comment": "dockwall:lan",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth1"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": "@src4-lan",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 17,
            "comment": "dockwall:lan",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth1"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                        "right": "@src6-lan",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 18,
            "comment": "dockwall:public-web",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {
                    "match": {
                        "op": "==",
                        "left": {
                            "concat": [
                                {"payload": {"protocol": "ip", "field": "daddr"}},
                                {"ct": {"key": "proto-dst", "dir": "original"}},
                            ]
                        },
                        "right": "@dst4_tcp-public-web",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 19,
            "comment": "dockwall:public-web",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {
                    "match": {
                        "op": "==",
                        "left": {
                            "concat": [
                                {"payload": {"protocol": "ip6", "field": "daddr"}},
                                {"ct": {"key": "proto-dst", "dir": "original"}},
                            ]
                        },
                        "right": "@dst6_tcp-public-web",
                    }
                },
                {"counter": {"packets": 0, "bytes": 0}},
                {"accept": None},
            ],
        }
    },
    {
        "rule": {
            "family": "inet",
            "table": "dockwall",
            "chain": "governed",
            "handle": 20,
            "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}],
        }
    },
]
# The proxy path's sets, chains and rules (input hook), recorded the same way from nft 1.0.6
# on kernel 6.18 (handles renumbered from 21 on).
SEED_LISTING += json.loads(
    (Path(__file__).parent / "fixtures" / "seed-nft-proxy-path.json").read_text()
)


def seed_ruleset() -> Ruleset:
    return compile_policy(load_policy(SEED / "policy.yaml"), load_host(SEED / "host.yaml")).ruleset


def listing(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"nftables": objects})


def edited() -> list[dict[str, Any]]:
    return copy.deepcopy(SEED_LISTING)


def rules_of(objects: list[dict[str, Any]], chain: str) -> list[dict[str, Any]]:
    return [o["rule"] for o in objects if "rule" in o and o["rule"]["chain"] == chain]


def plan(objects: list[dict[str, Any]] | None) -> Change[Any]:
    installed = None if objects is None else readback.parse(listing(objects)).table
    return transaction.to_apply(installed, render.render(seed_ruleset()))


def test_the_installed_seed_table_reads_back_as_rendered_so_nothing_is_pending() -> None:
    assert readback.parse(listing(SEED_LISTING)).table == render.render(seed_ruleset())
    change = plan(SEED_LISTING)
    assert not change.pending
    assert change.writes.script == "" and not any(f.pending for f in change.families)


def test_a_missing_table_is_pending_in_both_families_with_the_whole_table() -> None:
    change = plan(None)
    assert change.pending and all(f.pending for f in change.families)
    payload = change.writes.script
    assert payload.startswith("table inet dockwall {}\ndelete table inet dockwall\ntable inet")
    assert "chain governed: counter drop" in change.families[0].added


def test_a_deleted_default_rule_is_drift() -> None:
    objects = [o for o in edited() if not ("rule" in o and o["rule"]["handle"] == 20)]
    change = plan(objects)
    assert all(f.pending for f in change.families)
    assert change.families[0].added == ("chain governed: counter drop",)


def test_a_flushed_chain_is_drift() -> None:
    objects = [o for o in edited() if not ("rule" in o and o["rule"]["chain"] == "governed")]
    change = plan(objects)
    assert change.pending
    assert any("dockwall:admins" in line for line in change.families[0].added)


def test_a_removed_v6_element_makes_only_ipv6_pending() -> None:
    objects = edited()
    for o in objects:
        if "set" in o and o["set"]["name"] == "src6-lan":
            o["set"]["elem"] = []
    v4, v6 = plan(objects).families
    assert not v4.pending
    assert v6.pending and v6.added == ("set src6-lan: element 2001:db8:200::/124",)


def test_a_rule_added_by_hand_is_drift_and_shown_as_removed() -> None:
    objects = edited()
    extra = copy.deepcopy(rules_of(objects, "governed")[-1])
    extra["expr"] = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 22}},
        {"accept": None},
    ]  # fmt: skip
    objects.insert(len(objects) - 1, {"rule": extra})
    v4, _ = plan(objects).families
    assert v4.removed == ("chain governed: tcp dport 22 accept",)


def test_an_edited_match_or_priority_is_drift() -> None:
    objects = edited()
    rules_of(objects, "governed")[0]["expr"][0]["match"]["right"] = "eth1"
    assert plan(objects).pending
    objects = edited()
    for o in objects:
        if "chain" in o and o["chain"]["name"] == "forward":
            o["chain"]["prio"] = 10
    assert plan(objects).pending


def test_unknown_statements_and_objects_never_compare_equal() -> None:
    objects = edited()
    rules_of(objects, "governed")[-1]["expr"].insert(0, {"notrack": None})
    assert plan(objects).pending
    objects = [*edited(), {"counter": {"family": "inet", "table": "dockwall", "name": "x"}}]
    assert plan(objects).pending


def test_reordered_rules_are_pending_with_no_lines_to_show() -> None:
    objects = edited()
    first = next(i for i, o in enumerate(objects) if "rule" in o and o["rule"]["handle"] == 14)
    objects[first], objects[first + 1] = objects[first + 1], objects[first]
    change = plan(objects)
    assert all(f.pending and not f.added and not f.removed for f in change.families)


def test_tables_of_others_in_the_listing_are_ignored() -> None:
    other = {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": []}}
    assert not plan([*edited(), other]).pending


def test_hits_per_rule_across_families_and_the_default() -> None:
    objects = edited()
    counts = {14: (3, 180), 15: (2, 160), 20: (5, 300)}
    for rule in rules_of(objects, "governed"):
        if rule["handle"] in counts:
            packets, size = counts[rule["handle"]]
            rule["expr"][-2]["counter"] = {"packets": packets, "bytes": size}
    found = readback.hits(readback.parse(listing(objects)))
    assert found[("admins", Family.V4)] == Hits(3, 180)
    assert found[("admins", Family.V6)] == Hits(2, 160)
    hits = by_rule(found)
    assert hits["admins"] == Hits(5, 340)
    assert hits[DEFAULT_HITS] == Hits(5, 300)
    assert hits["lan"] == Hits(0, 0)


def test_remove_deletes_the_table_and_lists_every_line() -> None:
    table = readback.parse(listing(SEED_LISTING)).table
    change = transaction.to_remove(table)
    assert all(f.pending for f in change.families)
    assert change.writes.script == ("table inet dockwall {}\ndelete table inet dockwall\n")
    assert "set src4-admins: element 198.51.100.10/31" in change.families[0].removed
    assert not any("src6" in line for line in change.families[0].removed)
    assert not transaction.to_remove(None).pending


def test_an_address_range_reads_back_as_the_prefixes_it_covers() -> None:
    objects = edited()
    for o in objects:
        if "set" in o and o["set"]["name"] == "src4-admins":
            o["set"]["elem"] = [{"range": ["198.51.100.10", "198.51.100.11"]}]
    assert not plan(objects).pending


def test_lines_are_tagged_with_their_family() -> None:
    tagged = dict((line, fam) for fam, line in model.lines(render.render(seed_ruleset())))
    assert tagged["set src6-lan: element 2001:db8:200::/124"] is Family.V6
    assert tagged['chain forward: iifname { "br-*", "docker0" } accept'] is None
