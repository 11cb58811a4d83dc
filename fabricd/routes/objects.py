"""The objects a route plan is made of, and one object's candidates."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from fabricd.lxd.records import InstanceRecord, ListenerRecord, LXDSnapshot
from fabricd.routes.model import Origin, Refusal, Route
from fabricd.routes.networks import NetworkInfo, NetworkKey, PlanContext
from fabricd.routes.policy import shown
from fabricd.routes.sources import (
    Lookup,
    ObjectRoutes,
    instance_dependencies,
    instance_routes,
    listener_routes,
    network_routes,
)

# Network-level routes come from NetworkInfo (a network read together with its uplink), so an
# uplink change reaches them like any other change of the value.
PlanObject = InstanceRecord | ListenerRecord | NetworkInfo


def max_prefix_refusal(route: Route, limit: int) -> Refusal:
    return Refusal(str(route.prefix), route.origin, f"max_prefixes {limit} reached")


def routes_of(obj: PlanObject, ctx: PlanContext, lookup: Lookup) -> ObjectRoutes:
    """One object's candidates. A planner bug on one object refuses that object, not the plan."""
    try:
        if isinstance(obj, InstanceRecord):
            return instance_routes(obj, ctx, lookup)
        if isinstance(obj, NetworkInfo):
            return network_routes(obj, ctx)
        return listener_routes(obj, ctx, lookup)
    except Exception as exc:  # defence in depth: the property tests feed junk to keep this unused
        kind = obj.kind if isinstance(obj, ListenerRecord) else type(obj).__name__
        name = obj.name if isinstance(obj, InstanceRecord | NetworkInfo) else obj.listen_address
        origin = Origin(kind, obj.project, "", str(name))
        reason = f"could not plan: {type(exc).__name__}: {shown(str(exc))}"
        return ObjectRoutes(refused=(Refusal("", origin, reason),))


def plan_objects(snapshot: LXDSnapshot, infos: Iterable[NetworkInfo]) -> Iterable[PlanObject]:
    yield from infos
    yield from snapshot.instances
    yield from snapshot.forwards
    yield from snapshot.load_balancers


def dependencies(obj: PlanObject) -> set[NetworkKey]:
    """The network keys whose info an object's candidates read."""
    if isinstance(obj, InstanceRecord):
        return instance_dependencies(obj)
    if isinstance(obj, NetworkInfo):
        return set()  # a changed network is a new NetworkInfo value
    return {(obj.project, obj.network)}


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC passes while a plan is built.

    A plan allocates several objects per route and frees almost none before it returns, which is
    exactly what makes the collector rescan the whole heap again and again: at 50,000 routes that
    was half of the CPU time. Planning creates no reference cycles, so nothing is left behind.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
