"""Route status rows for fabricctl, built from the plan and where the speaker says each route went."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabricd.bgp.speaker import PeerRouteState, RouteStatus, overall
from fabricd.routes.model import Refusal, Route, RoutePlan

PerPeer = tuple[tuple[str, PeerRouteState], ...]


def route_rows(plan: RoutePlan, per_peer: Mapping[Route, PerPeer] | None) -> list[dict[str, Any]]:
    """One row per route: announced, partial or pending (per peer, the speaker's view), refused or
    withheld (the planner's). `per_peer` is None when no BGP speaker runs."""
    return RouteRows().build(plan, per_peer)


class RouteRows:
    """`route_rows`, keeping each route's row while its route, note and per-peer states stay the
    same. After one instance event at 50,000 routes a rebuild makes a few rows, and the snapshot
    being replaced shares the rest with the new one instead of a second copy of every row.
    Rows are never changed once built: snapshots and answers share them."""

    def __init__(self) -> None:
        self._kept: dict[Route, tuple[PerPeer | None, str, dict[str, Any]]] = {}

    def build(self, plan: RoutePlan, per_peer: Mapping[Route, PerPeer] | None) -> list[dict[str, Any]]:
        before, kept = self._kept, {}
        rows: list[dict[str, Any]] = []
        for route in plan.routes:
            peers = None if per_peer is None else per_peer.get(route, ())
            old = before.get(route)
            # `note` is not part of a route's equality; the row shows it.
            if old is not None and old[0] == peers and old[1] == route.note:
                row = old[2]
            else:
                row = _route_row(route, per_peer)
            kept[route] = (peers, route.note, row)
            rows.append(row)
        self._kept = kept
        rows += [_refusal_row(refusal, "refused") for refusal in plan.refused]
        rows += [_refusal_row(refusal, "withheld") for refusal in plan.withheld]
        return rows


def _reason(state: RouteStatus, peers: PerPeer, route: Route) -> str | None:
    if state == "announced":
        return None
    waiting = [name for name, s in peers if s == "pending"]
    down = [name for name, s in peers if s == "session down"]
    if state == "partial":
        return f"not yet acknowledged by {', '.join(waiting)}"
    if not peers:
        return f"no BGP peer takes IPv{route.version} routes"
    if waiting:
        return f"waiting for {', '.join(waiting)} to acknowledge"
    return f"no session it is meant for is up ({', '.join(down)} down)"


def _route_row(route: Route, per_peer: Mapping[Route, PerPeer] | None) -> dict[str, Any]:
    attributes = route.attributes
    if per_peer is None:
        state: RouteStatus = "pending"
        peers: PerPeer = ()
        reason: str | None = "no bgp section: nothing is announced"
    else:
        peers = per_peer.get(route, ())
        state = overall(peers)
        reason = _reason(state, peers, route)
    return {
        "prefix": str(route.prefix),
        "next_hop": str(route.next_hop),
        "origin": str(route.origin),
        "state": state,
        "reason": reason,
        "peers": {name: s for name, s in peers},
        "note": route.note or None,
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
