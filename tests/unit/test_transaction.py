"""The restore transaction: nothing when in sync, the hook put right, stale chains deleted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dockwall.backends.iptables import saved, transaction
from dockwall.model.values import Family

WANTED = {"DOCKWALL": ["-j DOCKWALL-DEFAULT"], "DOCKWALL-DEFAULT": ["-j DROP"]}


def saved_from(rules: str) -> saved.Saved:
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    return saved.parse(text + rules + "COMMIT\n")


IN_SYNC = """:DOCKER-USER - [0:0]
:DOCKWALL - [0:0]
:DOCKWALL-DEFAULT - [0:0]
-A INPUT -j DOCKWALL-INPUT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKWALL
-A FORWARD -j DOCKER-FORWARD
-A DOCKER-USER -j DOCKWALL
-A DOCKER-USER -j RETURN
[3:180] -A DOCKWALL -j DOCKWALL-DEFAULT
[2:120] -A DOCKWALL-DEFAULT -j DROP
"""


def test_in_sync_means_no_transaction() -> None:
    change = transaction.to_apply(Family.V4, saved_from(IN_SYNC), WANTED)
    assert not change.pending


def test_fresh_host_gets_chains_and_jumps_in_docker_user_and_forward() -> None:
    state = saved_from(
        ":DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n"
    )
    change = transaction.to_apply(Family.V4, state, WANTED)
    lines = change.payload.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert ":DOCKWALL - [0:0]" in lines
    assert "-A DOCKWALL-DEFAULT -j DROP" in lines
    assert lines[-4:-1] == [
        "-I DOCKER-USER 1 -j DOCKWALL",
        "-I FORWARD 1 -j DOCKWALL",
        "-I INPUT 1 -j DOCKWALL-INPUT",
    ]
    assert change.added == ("-A DOCKWALL -j DOCKWALL-DEFAULT", "-A DOCKWALL-DEFAULT -j DROP")


def test_without_docker_user_the_hook_is_the_top_of_forward() -> None:
    """As on Docker 29's nftables firewall backend (no iptables chain of Docker's at all)."""
    change = transaction.to_apply(Family.V6, saved_from(""), WANTED)
    assert change.payload.splitlines()[-3:-1] == [
        "-I FORWARD 1 -j DOCKWALL",
        "-I INPUT 1 -j DOCKWALL-INPUT",
    ]
    assert change.hook == (
        "jump to DOCKWALL at the top of FORWARD (there is no DOCKER-USER to hook), and from INPUT"
    )


def test_a_docker_user_that_forward_never_jumps_to_is_not_the_hook() -> None:
    state = saved_from(":DOCKER-USER - [0:0]\n")
    change = transaction.to_apply(Family.V6, state, WANTED)
    assert change.payload.splitlines()[-3:-1] == [
        "-I FORWARD 1 -j DOCKWALL",
        "-I INPUT 1 -j DOCKWALL-INPUT",
    ]


def test_hook_below_other_rules_is_moved_to_the_top() -> None:
    state = saved_from(
        IN_SYNC.replace("-A DOCKER-USER -j DOCKWALL\n", "") + "-A DOCKER-USER -j DOCKWALL\n"
    )
    lines = transaction.to_apply(Family.V4, state, WANTED).payload.splitlines()
    assert lines[-7:-1] == [
        "-D DOCKER-USER -j DOCKWALL",
        "-D FORWARD -j DOCKWALL",
        "-D INPUT -j DOCKWALL-INPUT",
        "-I DOCKER-USER 1 -j DOCKWALL",
        "-I FORWARD 1 -j DOCKWALL",
        "-I INPUT 1 -j DOCKWALL-INPUT",
    ]


def test_an_input_jump_below_other_rules_is_moved_to_the_top() -> None:
    """ufw or an operator's script inserting at the top of INPUT pushes ours down."""
    pushed = IN_SYNC.replace(
        "-A INPUT -j DOCKWALL-INPUT\n", "-A INPUT -i lo -j ACCEPT\n-A INPUT -j DOCKWALL-INPUT\n"
    )
    change = transaction.to_apply(Family.V4, saved_from(pushed), WANTED)
    assert change.pending and "-I INPUT 1 -j DOCKWALL-INPUT" in change.payload
    flushed = IN_SYNC.replace("-A INPUT -j DOCKWALL-INPUT\n", "")
    change = transaction.to_apply(Family.V4, saved_from(flushed), WANTED)
    assert change.pending and "-I INPUT 1 -j DOCKWALL-INPUT" in change.payload


def test_forward_jump_pushed_below_dockers_rules_is_put_back_on_top() -> None:
    """Docker, starting again, puts its jumps on top of FORWARD: ours must come back above
    everything but the jump to DOCKER-USER."""
    pushed = IN_SYNC.replace(
        "-A FORWARD -j DOCKWALL\n-A FORWARD -j DOCKER-FORWARD\n",
        "-A FORWARD -j DOCKER-FORWARD\n-A FORWARD -j DOCKWALL\n",
    )
    change = transaction.to_apply(Family.V4, saved_from(pushed), WANTED)
    assert change.pending and "-I FORWARD 1 -j DOCKWALL" in change.payload
    above_docker_user = IN_SYNC.replace(
        "-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKWALL\n",
        "-A FORWARD -j DOCKWALL\n-A FORWARD -j DOCKER-USER\n",
    )
    assert not transaction.to_apply(Family.V4, saved_from(above_docker_user), WANTED).pending


def test_a_flushed_docker_user_is_noticed() -> None:
    flushed = IN_SYNC.replace("-A DOCKER-USER -j DOCKWALL\n-A DOCKER-USER -j RETURN\n", "")
    change = transaction.to_apply(Family.V4, saved_from(flushed), WANTED)
    assert change.pending and "-I DOCKER-USER 1 -j DOCKWALL" in change.payload


def test_stale_chain_is_flushed_and_deleted() -> None:
    state = saved_from(IN_SYNC + ":DOCKWALL-R9 - [0:0]\n-A DOCKWALL-R9 -j RETURN\n")
    change = transaction.to_apply(Family.V4, state, WANTED)
    lines = change.payload.splitlines()
    assert lines.index(":DOCKWALL-R9 - [0:0]") < lines.index("-X DOCKWALL-R9")
    assert change.removed == ("-A DOCKWALL-R9 -j RETURN",)


def test_edited_chain_is_replaced_whole() -> None:
    state = saved_from(IN_SYNC.replace("-j DROP", "-j ACCEPT"))
    change = transaction.to_apply(Family.V4, state, WANTED)
    assert change.pending
    assert change.removed == ("-A DOCKWALL-DEFAULT -j ACCEPT",)


def test_remove_deletes_jumps_then_chains_and_nothing_else() -> None:
    state = saved_from(IN_SYNC + "-A FORWARD -j DOCKWALL\n")
    lines = transaction.to_remove(Family.V4, state).payload.splitlines()
    assert lines == [
        "*filter",
        "-D DOCKER-USER -j DOCKWALL",
        "-D FORWARD -j DOCKWALL",
        "-D FORWARD -j DOCKWALL",
        "-D INPUT -j DOCKWALL-INPUT",
        ":DOCKWALL - [0:0]",
        ":DOCKWALL-DEFAULT - [0:0]",
        "-X DOCKWALL",
        "-X DOCKWALL-DEFAULT",
        "COMMIT",
    ]


def test_remove_with_nothing_installed_does_nothing() -> None:
    assert not transaction.to_remove(Family.V4, saved_from("")).pending


def test_hits_are_summed_per_rule_by_comment() -> None:
    state = saved_from(
        ":DOCKWALL-S1 - [0:0]\n:DOCKWALL-DEFAULT - [0:0]\n"
        '[5:300] -A DOCKWALL-S1 -s 198.51.100.10/32 -m comment --comment "dockwall:admins" '
        "-j RETURN\n"
        '[1:60] -A DOCKWALL-S1 -s 198.51.100.11/32 -m comment --comment "dockwall:admins" '
        "-j RETURN\n"
        "[7:420] -A DOCKWALL-DEFAULT -j DROP\n"
    )
    hits = saved.hits(state)
    assert hits["admins"].packets == 6 and hits["admins"].bytes == 360
    assert hits["(default)"].packets == 7


def test_only_changed_chains_are_rewritten() -> None:
    state = saved_from(IN_SYNC.replace("-j DROP", "-j ACCEPT"))
    lines = transaction.to_apply(Family.V4, state, WANTED).payload.splitlines()
    assert ":DOCKWALL-DEFAULT - [0:0]" in lines
    assert ":DOCKWALL - [0:0]" not in lines
    assert not any(line.startswith("-A DOCKWALL ") for line in lines)


def test_undo_puts_back_what_was_installed() -> None:
    state = saved_from(IN_SYNC)
    wanted = {"DOCKWALL": ["-j DOCKWALL-DEFAULT"], "DOCKWALL-DEFAULT": ["-j ACCEPT"]}
    change = transaction.to_apply(Family.V4, state, wanted)
    later = transaction.after(state, wanted)
    assert later.chains == wanted and later.jump_positions("DOCKER-USER") == [0]
    assert change.undo.splitlines() == [
        "*filter",
        ":DOCKWALL-DEFAULT - [0:0]",
        "-A DOCKWALL-DEFAULT -j DROP",
        "COMMIT",
    ]


def test_undo_of_a_first_install_removes_it() -> None:
    state = saved_from(":DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n")
    change = transaction.to_apply(Family.V4, state, WANTED)
    assert change.undo.splitlines()[:2] == ["*filter", "-D DOCKER-USER -j DOCKWALL"]
    assert "-X DOCKWALL" in change.undo.splitlines()


def simulate(rules: list[str], script: list[str]) -> list[str]:
    """What iptables does with -D CHAIN N / -I CHAIN N RULE, in order."""
    rules = list(rules)
    for line in script:
        op, _chain, number, *rest = line.split(" ", 3)
        if op == "-D":
            del rules[int(number) - 1]
        else:
            rules.insert(int(number) - 1, rest[0])
    return rules


@given(
    old=st.lists(st.sampled_from("abcdefgh"), max_size=40),
    new=st.lists(st.sampled_from("abcdefgh"), max_size=40),
)
def test_edit_scripts_turn_the_old_chain_into_the_new(old: list[str], new: list[str]) -> None:
    script = transaction.edit_script("C", old, new)
    if script is not None:
        assert simulate(old, script) == new
        assert len(script) < len(new)


def test_one_more_container_is_one_inserted_rule() -> None:
    old = [f"-d 192.0.2.{n}/32 -g DOCKWALL-C1" for n in range(2, 200)] + ["-g DOCKWALL-DEFAULT"]
    new = [*old[:50], "-d 198.51.100.5/32 -g DOCKWALL-C1", *old[50:]]
    assert transaction.edit_script("DOCKWALL-IN", old, new) == [
        "-I DOCKWALL-IN 51 -d 198.51.100.5/32 -g DOCKWALL-C1"
    ]


def test_allowed_packets_are_counted_once_though_both_jumps_pass_them() -> None:
    state = saved_from(
        IN_SYNC + ":DOCKWALL-IN - [0:0]\n[10:600] -A DOCKWALL-IN -s 198.51.100.10/32 -m comment "
        '--comment "dockwall:admins" -j RETURN\n'
    )
    hits = saved.hits(state)
    assert hits["admins"].packets == 5 and hits["admins"].bytes == 300
    assert hits["(default)"].packets == 2  # a drop ends the first pass
