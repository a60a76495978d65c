"""Work out the one iptables-restore transaction that turns what is installed into what is
wanted (or removes dockwall). Pure: text in, text out."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from dockwall.backends.base import FamilyChange
from dockwall.backends.iptables.render import ENTRY, Chains
from dockwall.backends.iptables.saved import HOOK_CHAINS, JUMPS, Saved
from dockwall.model.values import Family

DOCKER_USER_JUMP = "-j DOCKER-USER"
NO_DOCKER_USER = " (there is no DOCKER-USER to hook)"  # Docker 20.10's ip6tables, Docker's nftables


@dataclass(frozen=True)
class Restore:
    """One family's iptables-restore transaction ("" if nothing to do), the one that puts
    back what it changed (if another family's is refused), and its lines for people."""

    family: Family
    payload: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    hook: str = ""
    undo: str = ""

    @property
    def pending(self) -> bool:
        return bool(self.payload)

    def shown(self, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> FamilyChange:
        """For people, with added and removed (ipset members that move) beside the rules."""
        lines = (self.added + added, self.removed + removed)
        return FamilyChange(self.family, self.pending or any(lines), *lines, self.hook)


def hook_chains(saved: Saved) -> list[str]:
    """Where dockwall's jump goes: the top of DOCKER-USER where FORWARD jumps to it (Docker
    made it in this family), and the top of FORWARD, below nothing but Docker's jump to
    DOCKER-USER. Two jumps, so that a flushed DOCKER-USER (a common way to reset one's own
    rules) opens nothing, and a Docker that restarts and puts its jumps on top of FORWARD
    still meets DOCKER-USER's. Where there is no DOCKER-USER (ip6tables on Docker 20.10,
    Docker 29's nftables firewall backend, a host before Docker), FORWARD only: a base chain
    of its own beside Docker's (nftables: its filter-FORWARD, same hook and priority), where
    a drop is final and an accept hands the packet on to Docker's chains. Evaluating the
    chains twice gives the same verdict. And the top of INPUT, for the proxy path
    (DOCKWALL-INPUT)."""
    forward = saved.hooks.get("FORWARD", [])
    hooks = ["DOCKER-USER", "FORWARD"] if DOCKER_USER_JUMP in forward else ["FORWARD"]
    return [*hooks, "INPUT"]


def to_apply(family: Family, saved: Saved, wanted: Chains, undoable: bool = True) -> Restore:
    hooks = hook_chains(saved)
    in_place = hook_ok(saved)
    if saved.chains == wanted and in_place:
        return Restore(family, "")
    stale = [c for c in saved.chains if c not in wanted]
    rewrite, edits = {}, []
    for chain, specs in wanted.items():
        old = saved.chains.get(chain)
        if old == specs:
            continue
        script = None if old is None else edit_script(chain, old, specs)
        if script is None:
            rewrite[chain] = specs
        else:
            edits += script
    lines = [f":{chain} - [0:0]" for chain in [*rewrite, *stale]]  # creates or flushes
    lines += [f"-A {chain} {spec}" for chain, specs in rewrite.items() for spec in specs]
    lines += edits
    lines += [f"-X {chain}" for chain in stale]
    note = ""
    if not in_place:
        lines += _unhook(saved)
        lines += [f"-I {hook} 1 {JUMPS[hook]}" for hook in hooks]
        forward = [h for h in hooks if h != "INPUT"]
        note = f"jump to {ENTRY} at the top of {' and '.join(forward)}"
        note += (NO_DOCKER_USER if forward == ["FORWARD"] else "") + ", and from INPUT"
    added, removed = _diff(saved.chains, wanted)
    undo = _undo(family, saved, wanted) if undoable else ""
    return Restore(family, _transaction(lines), added, removed, note, undo)


def edit_script(chain: str, old: list[str], new: list[str]) -> list[str] | None:
    """The -D/-I lines that turn chain's rules old into new, or None where rewriting the
    chain is shorter. Small changes to long chains then cost what changed, not what exists.
    Edits run from the end of the chain backwards, so each one's rule numbers still hold."""
    script: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
        if tag in {"delete", "replace"}:
            script += [f"-D {chain} {i1 + 1}"] * (i2 - i1)
        if tag in {"insert", "replace"}:
            script += [f"-I {chain} {i1 + 1 + k} {new[j1 + k]}" for k in range(j2 - j1)]
    return script if len(script) < len(new) else None


def after(saved: Saved, wanted: Chains) -> Saved:
    """What the kernel holds once to_apply's transaction has run."""
    hooks = {c: [r for r in rules if r != JUMPS[c]] for c, rules in saved.hooks.items()}
    for hook in hook_chains(saved):
        hooks[hook] = [JUMPS[hook], *hooks.get(hook, [])]
    existing = (saved.existing - set(saved.chains)) | set(wanted)
    return Saved({c: list(s) for c, s in wanted.items()}, {}, hooks, existing)


def _undo(family: Family, saved: Saved, wanted: Chains) -> str:
    """The transaction that puts back what saved shows, once to_apply's has run."""
    later = after(saved, wanted)
    if not saved.chains:
        return to_remove(family, later).payload
    return to_apply(family, later, saved.chains, undoable=False).payload


def to_remove(family: Family, saved: Saved) -> Restore:
    lines = _unhook(saved)
    lines += [f":{chain} - [0:0]" for chain in saved.chains]
    lines += [f"-X {chain}" for chain in saved.chains]
    if not lines:
        return Restore(family, "")
    _, removed = _diff(saved.chains, {})
    return Restore(family, _transaction(lines), (), removed, f"remove jumps to {ENTRY}")


def hook_ok(saved: Saved) -> bool:
    """One jump at the top of each hook chain (in FORWARD, below Docker's jump to
    DOCKER-USER at most), and none anywhere else."""
    hooks = hook_chains(saved)
    for chain in HOOK_CHAINS:
        places = saved.jump_positions(chain)
        if chain not in hooks:
            if places:
                return False
            continue
        above = saved.hooks.get(chain, [])[: places[0]] if len(places) == 1 else None
        if above is None or any(rule != DOCKER_USER_JUMP or chain != "FORWARD" for rule in above):
            return False
    return True


def _unhook(saved: Saved) -> list[str]:
    return [f"-D {c} {JUMPS[c]}" for c in HOOK_CHAINS for _ in saved.jump_positions(c)]


def _diff(old: Chains, new: Chains) -> tuple[tuple[str, ...], tuple[str, ...]]:
    def flat(chains: Chains) -> list[str]:
        return [f"-A {chain} {spec}" for chain, specs in chains.items() for spec in specs]

    before, after = flat(old), flat(new)
    before_set, after_set = set(before), set(after)
    return (
        tuple(x for x in after if x not in before_set),
        tuple(x for x in before if x not in after_set),
    )


def _transaction(lines: list[str]) -> str:
    return "\n".join(["*filter", *lines, "COMMIT", ""])
