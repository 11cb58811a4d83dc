"""The order an applier takes a service plan to the kernel and to BGP in, kept as data.

Two rules, per anycast prefix, so a router never sends traffic here that the host cannot deliver:
- announce only after the local host route is in place;
- withdraw before the local host route goes.
`ORDER_RULES` states them; `PHASES` is one order of step kinds that keeps them all (a test proves
it); `ordered_steps` turns what is in place and what is wanted into steps in that order. A step may
name what it `requires`: the step of that kind for the same prefix in this pass must have
succeeded first (an announce whose route failed to go in is skipped, and retried next pass).

Routes in place are the applier's report of the kernel (`HostRoute`); announcements in place are
what the route feature last handed ExaBGP for services. Both are sets: replacing a route's next
hops is atomic in the kernel (`RTM_NEWROUTE` with replace), so it never leaves the prefix without
a route, and announcing a prefix again with new attributes replaces the old announcement.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from fabricd.routes.model import IPNetwork, Refusal, Route, prefix_key, route_key
from fabricd.services.model import HostRoute

StepKind = Literal["bgp.withdraw", "route.install", "route.replace", "bgp.announce", "route.remove"]


@dataclass(frozen=True, slots=True)
class OrderRule:
    """For one prefix, a step of kind `first` comes before a step of kind `then` in the same pass,
    and `then` is skipped when `first` failed."""

    first: StepKind
    then: StepKind
    why: str


ORDER_RULES: tuple[OrderRule, ...] = (
    OrderRule("route.install", "bgp.announce", "announce only after the local route is in place"),
    OrderRule("bgp.withdraw", "route.remove", "withdraw before the local route goes"),
)
# Withdraws first: traffic leaves this host before anything else changes. Then routes in, then
# announcements over them, and only last the routes nothing announces any more.
PHASES: tuple[StepKind, ...] = (
    "bgp.withdraw",
    "route.install",
    "route.replace",
    "bgp.announce",
    "route.remove",
)


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    prefix: IPNetwork
    route: HostRoute | None = None  # route.install, route.replace: the route wanted
    announcement: Route | None = None  # bgp.announce: the announcement wanted
    requires: StepKind | None = None  # this pass's step of that kind for the prefix must succeed first


@dataclass(frozen=True, slots=True)
class OrderedSteps:
    steps: tuple[Step, ...]
    # Announcements wanted without a host route wanted for their prefix: never made (the planner
    # never asks for one; this keeps the rule even if it did).
    held: tuple[Refusal, ...] = ()


def ordered_steps(
    routes_in_place: Collection[HostRoute],
    announced: Collection[Route],
    routes_wanted: Iterable[HostRoute],
    announcements_wanted: Iterable[Route],
) -> OrderedSteps:
    """The steps from what is in place to what is wanted, in `PHASES` order, each phase by prefix."""
    have_routes = {route.prefix: route for route in routes_in_place}
    want_routes = {route.prefix: route for route in routes_wanted}
    have_ads = {route.prefix: route for route in announced}
    want_ads: dict[IPNetwork, Route] = {}
    held: list[Refusal] = []
    for ad in sorted(announcements_wanted, key=route_key):
        if ad.prefix in want_routes:
            want_ads.setdefault(ad.prefix, ad)  # one announcement per prefix: the lowest
        else:
            held.append(Refusal(str(ad.prefix), ad.origin, "no host route is planned for it"))
    steps: list[Step] = []
    for prefix in have_ads:
        if prefix not in want_ads:
            steps.append(Step("bgp.withdraw", prefix))
    for prefix, wanted in want_routes.items():
        current = have_routes.get(prefix)
        if current is None:
            steps.append(Step("route.install", prefix, route=wanted))
        elif set(current.next_hops) != set(wanted.next_hops):
            steps.append(Step("route.replace", prefix, route=wanted))
    for prefix, ad in want_ads.items():
        if have_ads.get(prefix) != ad:
            steps.append(Step("bgp.announce", prefix, announcement=ad))
    for prefix in have_routes:
        if prefix not in want_routes:
            steps.append(Step("route.remove", prefix))
    order = {kind: n for n, kind in enumerate(PHASES)}
    steps.sort(key=lambda s: (order[s.kind], prefix_key(s.prefix)))
    return OrderedSteps(tuple(_with_requirements(steps)), tuple(held))


def _with_requirements(steps: list[Step]) -> list[Step]:
    """Each step that a rule puts after another step for its prefix requires that one."""
    present = {(step.kind, step.prefix) for step in steps}
    out = []
    for step in steps:
        firsts = [r.first for r in ORDER_RULES if r.then == step.kind and (r.first, step.prefix) in present]
        out.append(replace(step, requires=firsts[0]) if firsts else step)
    return out
