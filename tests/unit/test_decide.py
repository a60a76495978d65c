"""The core's decide (dockwall.compile.decide) against a second implementation: the iptables
rendering of the same Ruleset, walked rule by rule as the kernel would (the oracle in
tests/oracles/iptables_walk.py), for random small Rulesets and packets on both paths; and the
line IptablesBackend.decide names for the core's answer (backends/iptables/lines.py) is the
one the walk stops at. Then a few stories, one per step."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dockwall.backends.iptables import ipsets
from dockwall.backends.iptables import lines as ipt_lines
from dockwall.backends.iptables import render as ipt_render
from dockwall.compile.decide import Ruling, Step, decide
from dockwall.model.packets import Decision, Outcome, Packet, Route
from dockwall.model.ruleset import Allow, Egress, Listener, Ruleset
from dockwall.model.values import Family, IPAddress, IPNetwork, PortRange, Proto, Verdict
from tests.oracles import iptables_walk as ipt_evaluate

net = ipaddress.ip_network
ip = ipaddress.ip_address

# Container addresses are host addresses (the compiler's _host_net), of both families.
CONTAINERS = [net("192.0.2.1"), net("192.0.2.2"), net("192.0.2.3"), net("2001:db8:d0c::1"),
              net("2001:db8:d0c::2")]  # fmt: skip
QUARANTINE = [net("192.0.2.3"), net("192.0.2.0/30"), net("2001:db8:d0c::2")]
# More than ipsets.THRESHOLD of them in one allow puts its sources in an ipset.
SOURCES = [net("198.51.100.0/25"), net("198.51.100.7"), net("203.0.113.0/24"),
           net("2001:db8:100::/64"), net("2001:db8:100::7"),
           *(net(f"198.51.100.{n}") for n in range(130, 142))]  # fmt: skip
LISTENERS = [Listener(p, port, net(a)) for p in Proto for port in (80, 8080)
             for a in ("0.0.0.0/0", "10.0.0.1", "::/0", "2001:db8:ffff::1")]  # fmt: skip
RANGES = [PortRange(Proto.TCP, 80, 80), PortRange(Proto.TCP, 80, 443), PortRange(Proto.UDP, 53, 53),
          PortRange(Proto.TCP, 8000, 8100), PortRange(Proto.UDP, 1, 65535)]  # fmt: skip
PORT_RANGES = st.lists(st.sampled_from(RANGES), min_size=1, unique=True).map(
    lambda found: tuple(sorted(found, key=str))
)
BRIDGES: list[tuple[str, ...]] = [(), ("docker0",), ("docker0", "br-abc"), ("br-q", "docker0")]
PACKET_SOURCES = ["198.51.100.7", "198.51.100.135", "198.51.100.200", "203.0.113.5",
                  "2001:db8:100::7", "2001:db8:100::99", "2001:db8:200::1"]  # fmt: skip
DESTINATIONS = {  # containers (and one that is none), then host addresses (the proxy path)
    (Route.FORWARD, Family.V4): ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.99"],
    (Route.FORWARD, Family.V6): ["2001:db8:d0c::1", "2001:db8:d0c::2", "2001:db8:d0c::9"],
    (Route.PROXY, Family.V4): ["10.0.0.1", "10.0.0.2"],
    (Route.PROXY, Family.V6): ["2001:db8:ffff::1", "2001:db8:ffff::2"],
}
# Repeats weigh the draw towards governed traffic, which is where allows are tried.
IN = ["eth0", "eth0", "eth1", "eth1", "veth0", "lo", "docker0", "br-abc", "br-q"]
OUT = ["docker0", "docker0", "br-abc", "br-new", "br-q", "eth0", "eth1"]
PORTS = [53, 80, 443, 8080, 8050]


def subset(items: list[IPNetwork]) -> st.SearchStrategy[tuple[IPNetwork, ...]]:
    return st.lists(st.sampled_from(items), unique=True).map(lambda x: tuple(sorted(x, key=str)))


@st.composite
def allows(draw: st.DrawFn, n: int) -> Allow:
    """Allows as the compiler makes them, which the iptables rendering relies on: listeners
    only where destinations are named (its proxy chain would match an allow for every
    container by its listeners too), ports never empty (no port line would mean any port),
    destinations host addresses (with overlapping ones, only the first class whose set holds
    the destination would be tried)."""
    destinations = draw(st.none() | subset(CONTAINERS))
    listeners = None
    if destinations is not None:
        listeners = tuple(draw(st.lists(st.sampled_from(LISTENERS), unique=True)))
    return Allow(
        rule=f"r{n}",
        line=n,
        source_names=("x",),
        via=draw(st.sampled_from([None, "eth0", "eth1"])),
        sources=draw(st.none() | st.none() | subset(SOURCES)),
        destinations=destinations,
        ports=draw(st.none() | PORT_RANGES),
        log=draw(st.booleans()),
        listeners=listeners,
    )


@st.composite
def egresses(draw: st.DrawFn, n: int, between: bool) -> Egress:
    """Outbound rules (to outside addresses, maybe many: a set) or between rules (to
    container addresses), as the compiler makes them."""
    return Egress(
        rule=f"{'b' if between else 'o'}{n}",
        line=100 + n,
        source_names=("x",),
        sources=draw(subset(CONTAINERS)),
        destinations=draw(st.none() | subset(CONTAINERS if between else SOURCES[:6])),
        ports=draw(st.none() | PORT_RANGES),
        via=None if between else draw(st.sampled_from([None, None, "eth0", "eth1"])),
        to_containers=between,
    )


@st.composite
def rulesets(draw: st.DrawFn) -> Ruleset:
    count = draw(st.integers(0, 5))
    outbound = draw(st.integers(0, 3))
    between = draw(st.integers(0, 3))
    return Ruleset(
        bridges=draw(st.sampled_from(BRIDGES)),
        bridge_prefixes=tuple(draw(st.lists(st.sampled_from(["br-", "br-n"]), unique=True))),
        allows=tuple(draw(allows(n)) for n in range(count)),
        default=draw(st.sampled_from(Verdict)),
        log_default=draw(st.booleans()),
        quarantine=draw(st.just(()) | subset(QUARANTINE)),
        quarantine_bridges=draw(st.sampled_from([(), (), ("br-q",), ("br-q", "docker0")])),
        listeners=tuple(draw(st.lists(st.sampled_from(LISTENERS), min_size=4, unique=True))),
        quarantine_listeners=tuple(draw(st.lists(st.sampled_from(LISTENERS), unique=True))),
        outbound=tuple(draw(egresses(n, False)) for n in range(outbound)),
        outbound_default=draw(st.none() | st.sampled_from(Verdict)),
        between=tuple(draw(egresses(n, True)) for n in range(between)),
        between_default=draw(st.none() | st.sampled_from(Verdict)),
    )


CONTAINER_SOURCES = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:d0c::1", "2001:db8:d0c::2"]
FROM_BRIDGES = ["docker0", "br-abc", "br-q", "br-new"]
OUT_OF_CONTAINERS = ["eth0", "eth0", "eth1", "docker0", "br-abc", "br-new", "br-q"]


@st.composite
def outside_packets(draw: st.DrawFn) -> Packet:
    source: IPAddress = ip(draw(st.sampled_from(PACKET_SOURCES)))
    route = draw(st.sampled_from(Route))
    out = "" if route is Route.PROXY else draw(st.sampled_from(OUT))
    return Packet(
        source,
        ip(draw(st.sampled_from(DESTINATIONS[route, Family.of(source)]))),
        draw(st.sampled_from(IN)),
        out,
        draw(st.sampled_from(Proto)),
        draw(st.sampled_from(PORTS if route is Route.FORWARD else [80, 8080, 8050])),
        route,
    )


@st.composite
def container_packets(draw: st.DrawFn) -> Packet:
    """In on a bridge: a container (mostly) calling out, or another container."""
    source: IPAddress = ip(draw(st.sampled_from(CONTAINER_SOURCES + PACKET_SOURCES[:2])))
    family = Family.of(source)
    outside = [a for a in PACKET_SOURCES if Family.of(ip(a)) is family]
    return Packet(
        source,
        ip(draw(st.sampled_from(DESTINATIONS[Route.FORWARD, family] + outside))),
        draw(st.sampled_from(FROM_BRIDGES)),
        draw(st.sampled_from(OUT_OF_CONTAINERS)),
        draw(st.sampled_from(Proto)),
        draw(st.sampled_from(PORTS)),
    )


def packets() -> st.SearchStrategy[Packet]:
    return outside_packets() | container_packets()


def walked(ruleset: Ruleset, packet: Packet) -> tuple[Decision, dict[str, list[str]]]:
    """What the iptables rendering of ruleset does with packet, walked rule by rule."""
    family = Family.of(packet.source)
    narrowed = ruleset.in_family(family)
    chains = ipt_render.render(family, narrowed)
    return ipt_evaluate.evaluate(chains, packet, ipsets.wanted(family, narrowed)), chains


def logged_as(ruling: Ruling) -> str:
    """The log prefix of the rule a dropped packet is logged under, "" if none is named."""
    if ruling.logged_by is None:
        return ""
    return f"dockwall:{ruling.logged_by.rule[:18]} "


@settings(max_examples=500, deadline=None)
@given(rulesets(), st.lists(packets(), min_size=1, max_size=25))
def test_the_iptables_rendering_walks_to_the_core_decision(
    ruleset: Ruleset, sent: list[Packet]
) -> None:
    for packet in sent:
        ruling = decide(ruleset, packet)
        walk, chains = walked(ruleset, packet)
        assert (walk.outcome, walk.policy_rule) == (ruling.outcome, ruling.policy_rule), (
            packet,
            ruling,
            walk,
        )
        named = ipt_lines.decision(ruleset, chains, packet)
        assert named == walk, (packet, ruling, named, walk)
        if ruling.step is Step.DEFAULT and packet.route is Route.FORWARD and ruling.logged_by:
            # Dropped in the destination's class chain, right after its rule's LOG line.
            assert walk.chain.startswith(f"{ipt_render.PREFIX}-C"), (packet, walk)
            assert f'--log-prefix "{logged_as(ruling)}"' in " ".join(chains[walk.chain])
        elif ruling.step in (Step.OUTBOUND_DEFAULT, Step.BETWEEN_DEFAULT):
            assert walk.chain in (ipt_render.OUTBOUND, ipt_render.BETWEEN), (packet, walk)
        elif ruling.outcome in (Outcome.DROPPED, Outcome.REJECTED) and walk.chain != (
            ipt_render.BETWEEN  # (a quarantined container, to one of its own network)
        ):
            assert walk.chain == ipt_render.DEFAULT, (packet, ruling, walk)


# Stories: one per step.

WEB = net("192.0.2.2")
STRANGER = ip("203.0.113.5")


def web(**kw: object) -> Allow:
    fields: dict[str, object] = {
        "via": None,
        "sources": None,
        "destinations": (WEB,),
        "ports": (PortRange(Proto.TCP, 80, 80),),
        "listeners": (Listener(Proto.TCP, 8080, net("0.0.0.0/0")),),
        **kw,
    }
    return Allow("web", 3, ("anyone",), **fields)  # type: ignore[arg-type]


def ruleset(*allowed: Allow, **kw: object) -> Ruleset:
    return Ruleset(("docker0",), ("br-",), allowed, Verdict.DROP, **kw)  # type: ignore[arg-type]


def to(destination: str, port: int, in_: str = "eth0", out: str = "docker0") -> Packet:
    return Packet(STRANGER, ip(destination), in_, out, Proto.TCP, port)


def host(port: int, in_: str = "eth0") -> Packet:
    return Packet(STRANGER, ip("10.0.0.1"), in_, "", Proto.TCP, port, Route.PROXY)


def test_an_allow_that_matches_names_itself() -> None:
    got = decide(ruleset(web()), to("192.0.2.2", 80))
    assert (got.outcome, got.step, got.policy_rule) == (Outcome.ALLOWED, Step.ALLOW, "web")


def test_allows_for_every_container_are_tried_first() -> None:
    everyone = Allow("everyone", 9, ("anyone",), None, None, None, None)
    got = decide(ruleset(web(), everyone), to("192.0.2.2", 80))
    assert got.policy_rule == "everyone"


def test_a_default_drop_names_the_first_allow_that_logs_for_the_destination() -> None:
    rs = ruleset(web(ports=(PortRange(Proto.TCP, 443, 443),)), web(log=True), web(log=True))
    got = decide(rs, to("192.0.2.2", 22))
    assert (got.outcome, got.step, got.allow) == (Outcome.DROPPED, Step.DEFAULT, None)
    assert got.logged_by == rs.allows[1]
    assert decide(rs, to("192.0.2.9", 22)).logged_by is None  # (not its destination)


def test_traffic_from_a_bridge_or_loopback_is_not_judged() -> None:
    assert decide(ruleset(), to("192.0.2.2", 22, in_="br-x")).step is Step.FROM_BRIDGE
    assert decide(ruleset(), host(8080, in_="lo")).step is Step.LOOPBACK
    assert decide(ruleset(), host(8080, in_="docker0")).outcome is Outcome.ALLOWED


def test_quarantine_comes_before_every_allow_address_first() -> None:
    rs = ruleset(web(), quarantine=(WEB,), quarantine_bridges=("docker0",))
    assert decide(rs, to("192.0.2.2", 80)).step is Step.QUARANTINED_ADDRESS
    got = decide(rs, to("192.0.2.7", 80, out="docker0"))
    assert (got.outcome, got.step) == (Outcome.DROPPED, Step.QUARANTINED_BRIDGE)
    rejecting = Ruleset((), (), (), Verdict.REJECT, quarantine=(WEB,))
    assert decide(rejecting, to("192.0.2.2", 80, out="eth1")).outcome is Outcome.REJECTED


def test_what_is_not_to_a_bridge_or_a_published_port_is_not_governed() -> None:
    rs = ruleset(web(), listeners=(Listener(Proto.TCP, 8080, net("0.0.0.0/0")),))
    assert decide(rs, to("192.0.2.2", 80, out="eth1")).step is Step.NOT_TO_BRIDGE
    assert decide(rs, host(22)).step is Step.NOT_LISTENED


def test_the_proxy_path_judges_an_allow_by_its_listeners() -> None:
    rs = ruleset(web(), listeners=(Listener(Proto.TCP, 8080, net("0.0.0.0/0")),))
    got = decide(rs, host(8080))
    assert (got.outcome, got.policy_rule) == (Outcome.ALLOWED, "web")
    admins = web(sources=(net("198.51.100.0/24"),))
    got = decide(ruleset(admins, listeners=rs.listeners), host(8080))
    assert (got.outcome, got.step, got.logged_by) == (Outcome.DROPPED, Step.DEFAULT, None)
