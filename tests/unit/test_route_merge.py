"""Several route planners, one set: merge rules and the decisions a plan change makes."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.loop import Observations
from fabricd.routes.feature import ROUTE_PLANS, SMALL_PLAN, RouteAnnouncing
from fabricd.routes.merge import merge_route_plans, route_decisions
from fabricd.routes.model import Origin, Refusal, Route, RoutePlan

LXD = Origin("nic-external-route", "default", "lxdbr0", "web1", "eth0/ipv4.routes.external")
SERVICE = Origin("service", "default", "", "dns")


def route(prefix: str, hop: str = "10.99.1.11", origin: Origin = LXD) -> Route:
    return Route(ip_network(prefix), ip_address(hop), origin)


def test_one_contribution_is_passed_through_as_the_same_object() -> None:
    plan = RoutePlan((route("10.201.1.0/24"),))
    assert merge_route_plans([plan], 10) is plan


def test_the_earlier_contribution_keeps_a_prefix_and_the_later_is_refused_with_the_owner() -> None:
    lxd = RoutePlan((route("10.201.1.0/24"),))
    service = RoutePlan((route("10.201.1.0/24", origin=SERVICE), route("10.201.53.1/32", origin=SERVICE)))
    merged = merge_route_plans([lxd, service], 10)
    assert [str(r.prefix) for r in merged.routes] == ["10.201.1.0/24", "10.201.53.1/32"]
    assert merged.routes[0].origin == LXD
    (refused,) = merged.refused
    assert refused.origin == SERVICE and str(LXD) in refused.reason


def test_max_prefixes_counts_the_whole_set() -> None:
    lxd = RoutePlan((route("10.201.1.0/24"), route("10.201.2.0/24")))
    service = RoutePlan((route("10.201.53.1/32", origin=SERVICE),))
    merged = merge_route_plans([lxd, service], 2)
    assert len(merged.routes) == 2
    assert [r.prefix for r in merged.refused] == ["10.201.53.1/32"]


PREFIXES = st.sampled_from(
    ["10.201.1.0/24", "10.201.2.0/24", "10.201.53.1/32", "fd00:201::/64", "fd00:201:1::/64"]
)
HOPS = st.sampled_from(["10.99.1.11", "10.99.1.12", "fd00:99:1::11"])
ORIGINS = st.sampled_from([LXD, SERVICE])


@st.composite
def plans(draw: st.DrawFn) -> RoutePlan:
    chosen = draw(st.lists(st.tuples(PREFIXES, HOPS, ORIGINS), max_size=6, unique_by=lambda t: t[0]))
    routes = tuple(route(p, h, o) for p, h, o in chosen if ip_network(p).version == ip_address(h).version)
    return RoutePlan(routes, (Refusal("0.0.0.0/0", LXD, "default route is never announced"),))


@settings(max_examples=200, deadline=None)
@given(st.lists(plans(), min_size=2, max_size=4), st.integers(1, 10))
def test_merge_keeps_one_route_per_prefix_and_accounts_for_every_route(
    contributions: list[RoutePlan], limit: int
) -> None:
    merged = merge_route_plans(contributions, limit)
    prefixes = [r.prefix for r in merged.routes]
    assert len(prefixes) == len(set(prefixes)) and len(prefixes) <= limit
    refused = {(r.prefix, r.origin) for r in merged.refused}
    for plan in contributions:
        for r in plan.routes:
            assert r in merged.routes or (str(r.prefix), r.origin) in refused
    first_claim = {}
    for plan in contributions:
        for r in plan.routes:
            first_claim.setdefault(r.prefix, r)
    assert all(first_claim[r.prefix] == r for r in merged.routes)


def test_decisions_name_what_changed_and_why() -> None:
    web, moved = route("10.201.1.0/24"), route("10.201.1.0/24", "10.99.1.12")
    gone = route("10.201.2.0/24")
    old = RoutePlan((web, gone))
    new = RoutePlan(
        (moved,),
        refused=(Refusal("0.0.0.0/0", LXD, "default route is never announced"),),
        withheld=(Refusal("10.201.2.0/24", LXD, "instance web1 is Stopped"),),
    )
    events = {event: items for event, (items, _total) in route_decisions(old, new).items()}
    (announce,) = events["route.announce"]
    assert (
        announce[0] == "10.201.1.0/24"
        and "via 10.99.1.12" in announce[1]
        and "was via 10.99.1.11" in announce[1]
    )
    (withdraw,) = events["route.withdraw"]
    assert withdraw[0] == "10.201.2.0/24" and "instance web1 is Stopped" in withdraw[1]
    (refuse,) = events["route.refuse"]
    assert refuse[0] == "0.0.0.0/0" and "default route is never announced" in refuse[1]
    assert "route.withhold" in events
    assert route_decisions(new, new) == {}


def test_a_cold_start_formats_only_what_is_shown_and_counts_the_rest() -> None:
    many = RoutePlan(tuple(route(f"10.201.{n}.0/24") for n in range(200)))
    items, total = route_decisions(RoutePlan(), many, limit=5)["route.announce"]
    assert total == 200 and [i[0] for i in items] == [f"10.201.{n}.0/24" for n in range(5)]
    items, total = route_decisions(many, RoutePlan(), limit=5)["route.withdraw"]
    assert total == 200 and len(items) == 5 and "no longer planned" in items[0][1]


def test_empty_contributions_leave_the_one_plan_as_the_same_object() -> None:
    lxd = RoutePlan((route("10.201.1.0/24"),))
    assert merge_route_plans([lxd, RoutePlan(), RoutePlan()], 10) is lxd
    assert merge_route_plans([RoutePlan(), lxd], 10) is lxd


def announce(announcing: RouteAnnouncing, *plans: RoutePlan) -> RoutePlan:
    observed = Observations()
    for plan in plans:
        observed.put(ROUTE_PLANS, plan)
    return asyncio.run(announcing.apply(observed))


def test_an_equal_service_plan_rebuilt_every_pass_keeps_the_merged_plan_and_records_nothing() -> None:
    decisions = DecisionLog()
    announcing = RouteAnnouncing(None, 10, decisions)
    lxd = RoutePlan((route("10.201.1.0/24"),))
    first = announce(announcing, lxd, RoutePlan((route("10.201.53.1/32", origin=SERVICE),)))
    recorded = decisions.recorded
    again = announce(announcing, lxd, RoutePlan((route("10.201.53.1/32", origin=SERVICE),)))
    assert again is first and decisions.recorded == recorded  # the status's row cache stays valid
    changed = announce(announcing, lxd, RoutePlan((route("10.201.53.2/32", origin=SERVICE),)))
    assert changed is not first and [str(r.prefix) for r in changed.routes] == [
        "10.201.1.0/24",
        "10.201.53.2/32",
    ]


def test_a_large_plan_counts_as_unchanged_only_when_it_is_the_same_object() -> None:
    announcing = RouteAnnouncing(None, 100_000, DecisionLog())
    big = tuple(route(f"10.{i // 256}.{i % 256}.0/24") for i in range(SMALL_PLAN + 1))
    service = RoutePlan((route("10.255.53.1/32", origin=SERVICE),))
    first = announce(announcing, RoutePlan(big), service)
    again = announce(announcing, RoutePlan(big), service)
    assert again is not first and again == first  # equal, merged again rather than compared on the loop
    lxd = RoutePlan(big)
    kept = announce(announcing, lxd, service)
    assert announce(announcing, lxd, service) is kept  # the same object: unchanged


def test_a_withdraw_or_a_new_limit_merges_again_from_the_same_contributions() -> None:
    announcing = RouteAnnouncing(None, 10, DecisionLog())
    lxd = RoutePlan((route("10.201.1.0/24"),))
    service = RoutePlan((route("10.201.53.1/32", origin=SERVICE),))
    announce(announcing, lxd, service)
    _withdraw_services(announcing)
    assert [str(r.prefix) for r in announce(announcing, lxd, service).routes] == [
        "10.201.1.0/24",
        "10.201.53.1/32",
    ]
    announcing.max_prefixes = 1
    assert [str(r.prefix) for r in announce(announcing, lxd, service).routes] == ["10.201.1.0/24"]


def _withdraw_services(announcing: RouteAnnouncing) -> None:
    plan = announcing.plan  # what RouteFeature.withdraw does to the announced set
    announcing.plan = RoutePlan(tuple(r for r in plan.routes if r.origin.kind != "service"))


def test_a_lone_contribution_beside_empty_ones_still_counts_against_max_prefixes() -> None:
    service = RoutePlan((route("10.201.53.1/32", origin=SERVICE), route("10.201.53.2/32", origin=SERVICE)))
    merged = merge_route_plans([RoutePlan(), service], 1)
    assert [str(r.prefix) for r in merged.routes] == ["10.201.53.1/32"]
    assert [r.prefix for r in merged.refused] == ["10.201.53.2/32"]
