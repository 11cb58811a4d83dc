"""The ordering rules as data: steps from what is in place to what is wanted, never announcing a
prefix this host has no route for, whatever steps fail on the way."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.routes.model import IPNetwork, Origin, Refusal, Route, RouteAttributes
from fabricd.services.model import HostRoute, NextHop
from fabricd.services.ordering import ORDER_RULES, PHASES, Step, ordered_steps

ORIGIN = Origin("service", "default", "dns", "", "addresses")
V4, V6 = IPv4Address("192.0.2.11"), IPv6Address("2001:db8:100::11")
P4, P6 = ip_network("10.250.0.53/32"), ip_network("2001:db8:250::53/128")


def hop(address: str) -> NextHop:
    return NextHop(ip_address(address), "lxdbr0")


def host_route(prefix: IPNetwork, *hops: str) -> HostRoute:
    return HostRoute(prefix, tuple(hop(h) for h in hops))


def ad(prefix: IPNetwork, med: int = 10, communities: tuple[str, ...] = ()) -> Route:
    return Route(
        prefix, V4 if prefix.version == 4 else V6, ORIGIN, RouteAttributes(communities, (), med, None)
    )


def kinds(steps: tuple[Step, ...]) -> list[tuple[str, str, str | None]]:
    return [(s.kind, str(s.prefix), s.requires) for s in steps]


def test_the_phases_keep_every_rule() -> None:
    for rule in ORDER_RULES:
        assert PHASES.index(rule.first) < PHASES.index(rule.then), rule.why


def test_a_new_address_is_routed_then_announced_and_the_announce_requires_the_route() -> None:
    wanted = host_route(P4, "10.0.0.11")
    out = ordered_steps((), (), [wanted], [ad(P4)])
    assert kinds(out.steps) == [
        ("route.install", "10.250.0.53/32", None),
        ("bgp.announce", "10.250.0.53/32", "route.install"),
    ]
    assert out.steps[0].route == wanted and out.steps[1].announcement == ad(P4)


def test_an_address_that_goes_is_withdrawn_then_unrouted() -> None:
    have = host_route(P6, "fd00::11")
    out = ordered_steps([have], [ad(P6)], [], [])
    assert kinds(out.steps) == [
        ("bgp.withdraw", "2001:db8:250::53/128", None),
        ("route.remove", "2001:db8:250::53/128", "bgp.withdraw"),
    ]


def test_widening_ecmp_replaces_the_route_and_leaves_the_announcement_alone() -> None:
    out = ordered_steps(
        [host_route(P4, "10.0.0.11")], [ad(P4)], [host_route(P4, "10.0.0.11", "10.0.0.12")], [ad(P4)]
    )
    assert kinds(out.steps) == [("route.replace", "10.250.0.53/32", None)]


def test_a_drain_re_announces_over_the_route_in_place() -> None:
    route = host_route(P4, "10.0.0.11")
    draining = ad(P4, med=4294967294, communities=("65535:0",))
    out = ordered_steps([route], [ad(P4)], [route], [draining])
    assert kinds(out.steps) == [("bgp.announce", "10.250.0.53/32", None)]
    # the delay over: withdrawn, and the route stays for traffic still on its way
    assert kinds(ordered_steps([route], [draining], [route], []).steps) == [
        ("bgp.withdraw", "10.250.0.53/32", None)
    ]


def test_nothing_changes_when_everything_is_in_place() -> None:
    routes = [host_route(P4, "10.0.0.11"), host_route(P6, "fd00::11")]
    assert ordered_steps(routes, [ad(P4), ad(P6)], routes, [ad(P6), ad(P4)]).steps == ()


def test_an_announcement_without_a_planned_route_is_held_and_withdrawn() -> None:
    out = ordered_steps([host_route(P4, "10.0.0.11")], [ad(P4)], [], [ad(P4)])
    assert out.held == (Refusal("10.250.0.53/32", ORIGIN, "no host route is planned for it"),)
    assert kinds(out.steps) == [
        ("bgp.withdraw", "10.250.0.53/32", None),
        ("route.remove", "10.250.0.53/32", "bgp.withdraw"),
    ]


# --- properties ---------------------------------------------------------------------------------

PREFIXES = [
    ip_network(p)
    for p in ("10.250.0.1/32", "10.250.0.2/32", "10.250.0.3/32", "2001:db8::1/128", "2001:db8::2/128")
]
HOPS4 = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
HOPS6 = ["fd00::11", "fd00::12"]


@st.composite
def states(
    draw: st.DrawFn, consistent: bool = True
) -> tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]]:
    """Routes and announcements for some prefixes; `consistent`: every announced prefix is routed
    (what the applier keeps in place)."""
    routes: dict[IPNetwork, HostRoute] = {}
    ads: dict[IPNetwork, Route] = {}
    for prefix in PREFIXES:
        routed = draw(st.booleans())
        if routed:
            pool = HOPS4 if prefix.version == 4 else HOPS6
            hops = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
            routes[prefix] = host_route(prefix, *sorted(hops))
        if (routed or not consistent) and draw(st.booleans()):
            ads[prefix] = ad(prefix, med=draw(st.sampled_from([10, 20, 4294967294])))
    return routes, ads


def apply(
    routes: dict[IPNetwork, HostRoute],
    ads: dict[IPNetwork, Route],
    steps: tuple[Step, ...],
    fails: set[int],
) -> list[tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]]]:
    """Run the steps as an applier does: a failed step changes nothing, and a step whose required
    step failed (or was skipped) is skipped. The states after each step."""
    routes, ads = dict(routes), dict(ads)
    failed: set[tuple[str, IPNetwork]] = set()
    seen = []
    for n, step in enumerate(steps):
        if n in fails or (step.requires is not None and (step.requires, step.prefix) in failed):
            failed.add((step.kind, step.prefix))
        elif step.kind in ("route.install", "route.replace"):
            assert step.route is not None
            routes[step.prefix] = step.route
        elif step.kind == "route.remove":
            del routes[step.prefix]
        elif step.kind == "bgp.announce":
            assert step.announcement is not None
            ads[step.prefix] = step.announcement
        else:
            del ads[step.prefix]
        seen.append((dict(routes), dict(ads)))
    return seen


@settings(max_examples=500, deadline=None)
@given(states(), states(consistent=False), st.sets(st.integers(0, 12)))
def test_no_prefix_is_ever_announced_without_a_route_whatever_fails(
    have: tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]],
    want: tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]],
    fails: set[int],
) -> None:
    out = ordered_steps(
        list(have[0].values()), list(have[1].values()), list(want[0].values()), list(want[1].values())
    )
    for routes, ads in apply(*have, out.steps, fails):
        assert set(ads) <= set(routes)


@settings(max_examples=500, deadline=None)
@given(states(), states(consistent=False))
def test_the_steps_reach_what_is_wanted_in_rule_order_and_touch_nothing_else(
    have: tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]],
    want: tuple[dict[IPNetwork, HostRoute], dict[IPNetwork, Route]],
) -> None:
    out = ordered_steps(
        list(have[0].values()), list(have[1].values()), list(want[0].values()), list(want[1].values())
    )
    final_routes, final_ads = ([*apply(*have, out.steps, set())] or [have])[-1]
    wanted_ads = {p: a for p, a in want[1].items() if p in want[0]}
    assert final_routes == want[0] and final_ads == wanted_ads
    assert {r.prefix for r in out.held} == {str(p) for p in set(want[1]) - set(want[0])}
    for rule in ORDER_RULES:
        for prefix in PREFIXES:
            at = [n for n, s in enumerate(out.steps) if s.prefix == prefix]
            firsts = [n for n in at if out.steps[n].kind == rule.first]
            thens = [n for n in at if out.steps[n].kind == rule.then]
            assert all(f < t for f in firsts for t in thens), rule.why
            assert all(out.steps[t].requires == rule.first for t in thens if firsts)
    # minimal: at most one step of a kind per prefix, and none for a prefix already as wanted
    assert len({(s.kind, s.prefix) for s in out.steps}) == len(out.steps)
    for prefix in PREFIXES:
        unchanged = have[0].get(prefix) == want[0].get(prefix) and have[1].get(prefix) == wanted_ads.get(
            prefix
        )
        if unchanged:
            assert all(s.prefix != prefix for s in out.steps)
