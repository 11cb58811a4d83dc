"""The route planner: from an LXD snapshot and the config to the routes this host announces.

Pure and deterministic: no I/O, every list sorted (routes IPv4 first, each family in Route's own
order; refusals in Refusal's order), the same answer for any order of the snapshot's tuples.

    plan_routes(snapshot, config) -> RoutePlan           one plan from scratch
    IncrementalPlanner(config).update(snapshot)          the same answers, redoing only what changed

Pipeline: per-object candidates (`sources`: rules, policy, locality, next hops), then per-prefix
conflicts (`conflicts`: duplicate owners, overlaps across networks), then the max_prefixes guard:
the first routes.max_prefixes routes in sorted order are kept and the rest refused.
"""

from __future__ import annotations

from fabricd.bgp.paths import SessionPaths
from fabricd.config.model import FabricConfig
from fabricd.lxd.records import LXDSnapshot
from fabricd.routes.conflicts import LiveIndex, refusal_key, resolve_prefix
from fabricd.routes.incremental import IncrementalPlanner
from fabricd.routes.model import IPNetwork, Refusal, Route, RoutePlan, route_key
from fabricd.routes.networks import PlanContext, network_infos
from fabricd.routes.objects import gc_paused, max_prefix_refusal, plan_objects, routes_of
from fabricd.routes.sources import Claim

__all__ = ["IncrementalPlanner", "plan_routes"]


def plan_routes(snapshot: LXDSnapshot, config: FabricConfig, paths: SessionPaths | None = None) -> RoutePlan:
    with gc_paused():
        return _plan(snapshot, config, paths)


def _plan(snapshot: LXDSnapshot, config: FabricConfig, paths: SessionPaths | None) -> RoutePlan:
    ctx = PlanContext.of(snapshot, config, paths)
    infos, _ = network_infos(snapshot.networks, ctx)
    refused: set[Refusal] = set()
    withheld: set[Refusal] = set()
    by_prefix: dict[IPNetwork, list[Claim]] = {}
    for obj in plan_objects(snapshot, infos.values()):
        result = routes_of(obj, ctx, infos.get)
        refused.update(result.refused)
        withheld.update(result.withheld)
        for claim in result.claims:
            group = by_prefix.get(claim.prefix)
            if group is None:
                by_prefix[claim.prefix] = [claim]
            else:
                group.append(claim)
    live = LiveIndex()
    for prefix, group in by_prefix.items():
        if len(group) > 1:
            group[:] = dict.fromkeys(group)
        if any(c.live for c in group):
            live.add(prefix)
    candidates: list[Route] = []
    for prefix, group in by_prefix.items():
        nesting = [c for other in live.nesting(prefix) for c in by_prefix[other] if c.live]
        outcome = resolve_prefix(prefix, group, nesting)
        if outcome.route is not None:
            candidates.append(outcome.route)
        refused.update(outcome.refused)
        withheld.update(outcome.withheld)
    candidates.sort(key=route_key)
    limit = config.routes.max_prefixes
    refused.update(max_prefix_refusal(route, limit) for route in candidates[limit:])
    return RoutePlan(
        tuple(candidates[:limit]),
        tuple(sorted(refused, key=refusal_key)),
        tuple(sorted(withheld, key=refusal_key)),
    )
