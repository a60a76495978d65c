"""recompile(policy, before, compiled, after) == compile_policy(policy, after), reusing the
rules that the containers which changed can't concern. Pure.

compile_policy tries every rule's selectors on every container: O(rules x containers) on
each Docker event. Here only the rules whose selectors (to, or from for rules from
containers) match a changed container, as it was or as it is, are compiled again; the
others keep their part (compiler.Part). What is host-wide (bridges, quarantine, the
published host ports) is assembled again from `after`. Where the frame changed (networks,
interfaces, quarantined objects, Docker's version or cgroup) everything is compiled again.
tests/unit/test_incremental.py holds the two equal over random hosts and event sequences.
"""

from __future__ import annotations

from collections import Counter

from dockwall.compile.compiler import (
    Compiled,
    assemble,
    compile_policy,
    container_listeners,
    ordered,
    rule_part,
    selects,
)
from dockwall.model.hoststate import Container, HostState
from dockwall.model.policy import Policy, Rule


def recompile(policy: Policy, before: HostState, compiled: Compiled, after: HostState) -> Compiled:
    """compiled is compile_policy(policy, before) (or an earlier recompile's result)."""
    if not _same_frame(before, after) or len(compiled.parts) != len(policy.rules):
        return compile_policy(policy, after)
    gone, came = _changes(before, after)
    touched = gone + came
    counts = Counter(compiled.listened)
    for container in gone:
        counts.subtract(container_listeners(container))
    for container in came:
        counts.update(container_listeners(container))
    old = compiled.ruleset.listeners
    same = {x for x, n in counts.items() if n > 0} == set(old)
    listened = (counts, old if same else ordered(counts))
    bridged = frozenset(n.name for n in after.bridge_networks)
    parts = tuple(
        rule_part(rule, after, bridged) if _concerns(rule, touched) else part
        for rule, part in zip(policy.rules, compiled.parts, strict=True)
    )
    return assemble(policy, after, parts, listened)


def changed_containers(before: HostState, after: HostState) -> list[Container]:
    """The containers that came, went or changed, as they were and as they are."""
    gone, came = _changes(before, after)
    return gone + came


def _changes(before: HostState, after: HostState) -> tuple[list[Container], list[Container]]:
    """(as they were, as they are) of the containers that went, came or changed. The
    snapshot keeps the objects of containers that did not change: most compare by identity."""
    old = {c.id: c for c in before.containers}
    new = {c.id: c for c in after.containers}
    gone = [c for i, c in old.items() if not _same(new.get(i), c)]
    came = [c for i, c in new.items() if not _same(old.get(i), c)]
    return gone, came


def _same(a: Container | None, b: Container) -> bool:
    return a is b or a == b


def _concerns(rule: Rule, containers: list[Container]) -> bool:
    """A rule's part depends on these containers if its selectors could pick one of them:
    its to (None, every container, names no address), or its from (rules from containers)."""
    selectors = (*(rule.targets or ()), *rule.origins)
    return any(selects(s, c) for s in selectors for c in containers)


def _same_frame(before: HostState, after: HostState) -> bool:
    return (
        before.networks == after.networks
        and before.interfaces == after.interfaces
        and before.quarantined == after.quarantined
        and before.proxy_cgroup == after.proxy_cgroup
        and before.docker_version == after.docker_version
    )
