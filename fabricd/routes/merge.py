"""Several route planners, one announcement set.

LXD's routes come from one planner; service addresses (anycast) will come from another. Before
the speaker sees them they pass the same rules: one route per prefix, and routes.max_prefixes over
the whole set. Contributions are read in registration order (LXD first), so when two claim the same
prefix, the earlier keeps it and the later is refused with a reason naming the owner. A single
contribution is returned as it is: the speaker then recognises an unchanged set at no cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabricd.routes.conflicts import refusal_key
from fabricd.routes.model import IPNetwork, Refusal, Route, RoutePlan, route_key
from fabricd.routes.objects import max_prefix_refusal


def merge_route_plans(plans: Sequence[RoutePlan], max_prefixes: int) -> RoutePlan:
    if len(plans) == 1:
        return plans[0]
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


def route_decisions(old: RoutePlan, new: RoutePlan) -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    """What changed between two plans, as decisions: (subject, reason, fields) per event key.

    A withdrawn route says why: it is now refused or withheld (with that reason), or its object
    is gone.
    """
    events: dict[str, list[tuple[str, str, dict[str, str]]]] = {}
    if old is new:
        return events
    if old.routes is not new.routes:
        before, after = set(old.routes), set(new.routes)
        replaced = {r.prefix: r for r in before - after}
        now_refused = {r.prefix: r.reason for r in (*new.refused, *new.withheld)}
        announced = []
        for r in sorted(after - before, key=route_key):
            was = replaced.pop(r.prefix, None)
            change = "" if was is None else f" (was via {was.next_hop} for {was.origin})"
            announced.append(
                (str(r.prefix), f"announce {r.prefix} via {r.next_hop} for {r.origin}{change}", _fields(r))
            )
        events["route.announce"] = announced
        events["route.withdraw"] = [
            (
                str(r.prefix),
                f"withdraw {r.prefix}: {now_refused.get(str(r.prefix), 'no longer planned')}",
                _fields(r),
            )
            for r in sorted(replaced.values(), key=route_key)
        ]
    for event, old_list, new_list in (
        ("route.refuse", old.refused, new.refused),
        ("route.withhold", old.withheld, new.withheld),
    ):
        if old_list is new_list:
            continue
        fresh = set(new_list) - set(old_list)
        verb = "refused" if event == "route.refuse" else "withheld"
        events[event] = [
            (r.prefix, f"{verb} {r.prefix} from {r.origin}: {r.reason}", {"origin": str(r.origin)})
            for r in sorted(fresh, key=refusal_key)
        ]
    return {k: v for k, v in events.items() if v}


def _fields(route: Route) -> dict[str, str]:
    return {"next_hop": str(route.next_hop), "origin": str(route.origin)}
