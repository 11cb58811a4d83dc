"""Several route planners, one announcement set.

LXD's routes come from one planner; service addresses (anycast) will come from another. Before
the speaker sees them they pass the same rules: one route per prefix, and routes.max_prefixes over
the whole set. Contributions are read in registration order (LXD first), so when two claim the same
prefix, the earlier keeps it and the later is refused with a reason naming the owner. A single
contribution, or a single one that is not empty and within max_prefixes, is returned as it is:
the speaker and the status then recognise an unchanged set by identity, at no cost, even at
50,000 routes.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from fabricd.routes.conflicts import refusal_key
from fabricd.routes.model import IPNetwork, Refusal, Route, RoutePlan, route_key
from fabricd.routes.objects import max_prefix_refusal


def merge_route_plans(plans: Sequence[RoutePlan], max_prefixes: int) -> RoutePlan:
    if len(plans) == 1:
        return plans[0]
    contributing = [p for p in plans if p.routes or p.refused or p.withheld]
    if len(contributing) == 1 and len(contributing[0].routes) <= max_prefixes:
        return contributing[0]
    owner: dict[IPNetwork, Route] = {}
    refused: list[Refusal] = []
    withheld: list[Refusal] = []
    for plan in plans:
        for route in plan.routes:
            first = owner.get(route.prefix)
            if first is None:
                owner[route.prefix] = route
            else:
                reason = f"{route.prefix} is already announced for {first.origin}"
                refused.append(Refusal(str(route.prefix), route.origin, reason))
        refused += plan.refused
        withheld += plan.withheld
    routes = sorted(owner.values(), key=route_key)
    refused += (max_prefix_refusal(route, max_prefixes) for route in routes[max_prefixes:])
    return RoutePlan(
        tuple(routes[:max_prefixes]),
        tuple(sorted(set(refused), key=refusal_key)),
        tuple(sorted(set(withheld), key=refusal_key)),
    )


Item = tuple[str, str, dict[str, str]]  # subject, reason, fields


def route_decisions(old: RoutePlan, new: RoutePlan, limit: int = 50) -> dict[str, tuple[list[Item], int]]:
    """What changed between two plans, as decisions per event key: the first `limit` items in
    route order, formatted, and how many there are in all (a cold start changes 50,000 routes;
    only the few that are shown are worth formatting).

    A withdrawn route says why: it is now refused or withheld (with that reason), or its object
    is gone. A route whose next hop or attributes changed is one announce, naming what it was.
    """
    events: dict[str, tuple[list[Item], int]] = {}
    if old is new:
        return events
    if old.routes is not new.routes:
        before, after = set(old.routes), set(new.routes)
        gone = before - after
        replaced = {r.prefix: r for r in gone}
        arrived = after - before
        now_refused = {r.prefix: r.reason for r in (*new.refused, *new.withheld)}
        announced = []
        for r in heapq.nsmallest(limit, arrived, key=route_key):
            was = replaced.get(r.prefix)
            change = "" if was is None else f" (was via {was.next_hop} for {was.origin})"
            text = f"announce {r.prefix} via {r.next_hop} for {r.origin}{change}"
            announced.append((str(r.prefix), text, _fields(r)))
        events["route.announce"] = (announced, len(arrived))
        arrived_prefixes = {r.prefix for r in arrived} if gone else set()
        withdrawn = [r for r in gone if r.prefix not in arrived_prefixes]
        events["route.withdraw"] = (
            [
                (
                    str(r.prefix),
                    f"withdraw {r.prefix}: {now_refused.get(str(r.prefix), 'no longer planned')}",
                    _fields(r),
                )
                for r in heapq.nsmallest(limit, withdrawn, key=route_key)
            ],
            len(withdrawn),
        )
    for event, old_list, new_list in (
        ("route.refuse", old.refused, new.refused),
        ("route.withhold", old.withheld, new.withheld),
    ):
        if old_list is new_list:
            continue
        fresh = set(new_list) - set(old_list)
        verb = "refused" if event == "route.refuse" else "withheld"
        events[event] = (
            [
                (r.prefix, f"{verb} {r.prefix} from {r.origin}: {r.reason}", {"origin": str(r.origin)})
                for r in heapq.nsmallest(limit, fresh, key=refusal_key)
            ],
            len(fresh),
        )
    return {k: v for k, v in events.items() if v[1]}


def _fields(route: Route) -> dict[str, str]:
    return {"next_hop": str(route.next_hop), "origin": str(route.origin)}
