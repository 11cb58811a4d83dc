"""Route and peer status rows for fabricctl, built from the plan and what the speaker confirmed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabricd.routes.model import Refusal, Route, RoutePlan


def route_rows(plan: RoutePlan, states: Mapping[Route, str]) -> list[dict[str, Any]]:
    """One row per route: announced or pending (speaker's view), refused or withheld (planner's)."""
    rows = [_route_row(route, states.get(route, "pending")) for route in plan.routes]
    rows += [_refusal_row(refusal, "refused") for refusal in plan.refused]
    rows += [_refusal_row(refusal, "withheld") for refusal in plan.withheld]
    return rows


def _route_row(route: Route, state: str) -> dict[str, Any]:
    attributes = route.attributes
    return {
        "prefix": str(route.prefix),
        "next_hop": str(route.next_hop),
        "origin": str(route.origin),
        "state": state,
        "reason": None if state == "announced" else "waiting for the BGP speaker to confirm",
        "communities": list(attributes.communities),
        "large_communities": list(attributes.large_communities),
        "med": attributes.med,
        "local_pref": attributes.local_pref,
    }


def _refusal_row(refusal: Refusal, state: str) -> dict[str, Any]:
    return {
        "prefix": refusal.prefix,
        "next_hop": None,
        "origin": str(refusal.origin),
        "state": state,
        "reason": refusal.reason,
    }
