"""Property tests: invariants of every plan, and the incremental planner equal to the cold one.

The invariants are checked against the snapshot with independent, plain ipaddress code, so they
do not share the planner's range or next-hop logic.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import collapse_addresses, ip_address, ip_interface, ip_network, summarize_address_range
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabricd.config import FabricConfig
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord
from fabricd.routes import incremental
from fabricd.routes.conflicts import LiveIndex
from fabricd.routes.model import IPAddress, IPNetwork, Origin, Route, RouteAttributes, RoutePlan, route_key
from fabricd.routes.ordered import SortedBag
from fabricd.routes.planner import IncrementalPlanner, plan_routes
from tests.unit.lxd_strategies import (
    BRIDGE_NETS,
    bridge,
    config,
    configs,
    forwards,
    instance,
    instances,
    load_balancers,
    networks,
    nic,
    snapshot,
    snapshots,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("networks", "instances", "forwards", "load_balancers")


def _prefixes(text: str) -> list[IPNetwork]:
    found = []
    for entry in text.split(","):
        try:
            found.append(ip_network(entry.strip()))
        except ValueError:
            continue
    return found


def _ovn_ranges(text: str, version: int) -> list[IPNetwork]:
    found: list[IPNetwork] = []
    for entry in text.split(","):
        try:
            start, end = (ip_address(part.strip()) for part in entry.split("-"))
            if start.version == end.version == version and start <= end:  # type: ignore[operator]
                found.extend(summarize_address_range(start, end))
        except ValueError:
            continue
    return found


def _network_of(snap: LXDSnapshot, route: Route) -> NetworkRecord:
    origin = route.origin
    found = snap.network(origin.project, origin.network) or snap.network("default", origin.network)
    assert found is not None, route
    return found


def _uplink_of(snap: LXDSnapshot, network: NetworkRecord) -> NetworkRecord:
    found = snap.network("default", network.config.get("network", "").strip())
    assert found is not None
    return found


def _allowed(snap: LXDSnapshot, cfg: FabricConfig, route: Route) -> bool:
    v = route.version
    ranges = [r for r in cfg.routes.allowed_ranges if r.version == v]
    network = _network_of(snap, route)
    if network.type == "ovn":
        up = _uplink_of(snap, network)
        ranges += _prefixes(up.config.get(f"ipv{v}.routes", ""))
        ranges += _ovn_ranges(up.config.get(f"ipv{v}.ovn.ranges", ""), v)
    else:
        with contextlib.suppress(ValueError):
            ranges.append(ip_interface(network.config.get(f"ipv{v}.address", "")).network)
    same_family = [r for r in ranges if r.version == v]
    return any(route.prefix.subnet_of(r) for r in collapse_addresses(same_family))  # type: ignore[type-var, arg-type]


def _expected_next_hop(snap: LXDSnapshot, cfg: FabricConfig, route: Route) -> IPAddress:
    v = route.version
    network = _network_of(snap, route)
    if network.type == "bridge":
        host = cfg.host
        return host.underlay_address if v == 4 or host.underlay_address6 is None else host.underlay_address6
    bgp = _uplink_of(snap, network).config.get(f"bgp.ipv{v}.nexthop", "").strip()
    return ip_address(bgp or network.config[f"volatile.network.ipv{v}.address"].strip())


def check_invariants(snap: LXDSnapshot, cfg: FabricConfig, plan: RoutePlan) -> None:
    assert list(plan.routes) == sorted(plan.routes, key=lambda r: (r.version, r))
    assert list(plan.refused) == sorted(set(plan.refused))
    assert list(plan.withheld) == sorted(set(plan.withheld))
    assert not [r for r in plan.refused if "could not plan" in r.reason]
    assert len(plan.routes) <= cfg.routes.max_prefixes
    prefixes = [r.prefix for r in plan.routes]
    assert len(set(prefixes)) == len(prefixes)
    contested = {r.prefix for r in plan.refused if r.reason.startswith(("also claimed by", "overlaps"))}
    for route in plan.routes:
        assert route.prefix.prefixlen > 0
        assert route.next_hop.version == route.prefix.version
        assert _allowed(snap, cfg, route), route
        assert route.next_hop == _expected_next_hop(snap, cfg, route), route
        assert str(route.prefix) not in contested
        origin = route.origin
        if origin.instance:
            assert any(
                i.project == origin.project
                and i.name == origin.instance
                and i.running
                and i.location == snap.member
                for i in snap.instances
            ), route
    by_network = sorted(plan.routes, key=lambda r: r.prefix.prefixlen)
    for i, outer in enumerate(by_network):
        for inner in by_network[i + 1 :]:
            if inner.version == outer.version and inner.prefix.subnet_of(outer.prefix):  # type: ignore[arg-type]
                assert inner.origin.network == outer.origin.network, (outer, inner)


def _shuffled(snap: LXDSnapshot, rnd: random.Random) -> LXDSnapshot:
    changes: dict[str, Any] = {}
    for name in FIELDS:
        items = list(getattr(snap, name))
        rnd.shuffle(items)
        changes[name] = tuple(items)
    return replace(snap, **changes)


@SETTINGS
@given(snapshots(), configs())
def test_every_plan_keeps_the_invariants(snap: LXDSnapshot, cfg: FabricConfig) -> None:
    plan = plan_routes(snap, cfg)
    check_invariants(snap, cfg, plan)
    assert plan_routes(snap, cfg) == plan


@settings(SETTINGS, max_examples=100)
@given(snapshots(), configs(), st.randoms(use_true_random=False))
def test_plans_do_not_depend_on_the_order_of_the_snapshot(
    snap: LXDSnapshot, cfg: FabricConfig, rnd: random.Random
) -> None:
    assert plan_routes(_shuffled(snap, rnd), cfg) == plan_routes(snap, cfg)


@settings(SETTINGS, max_examples=50)
@given(configs(), st.lists(snapshots(), min_size=1, max_size=5))
def test_incremental_equals_cold_across_unrelated_snapshots(
    cfg: FabricConfig, snaps: list[LXDSnapshot]
) -> None:
    planner = IncrementalPlanner(cfg)
    for snap in snaps:
        assert planner.update(snap) == plan_routes(snap, cfg)


def _record_strategy(field: str, clustered: bool) -> st.SearchStrategy[Any]:
    if field == "networks":
        return networks().flatmap(st.sampled_from)
    if field == "instances":
        return instances(clustered)
    return forwards(clustered) if field == "forwards" else load_balancers(clustered)


@contextlib.contextmanager
def _bounds(tiny: bool) -> Iterator[None]:
    """Tiny bounds send every update down the bulk paths (re-sorts, identity sets)."""
    saved = SortedBag.BULK_EDITS, LiveIndex.EDIT_BOUND, incremental._POSITIONAL_BOUND
    if tiny:
        SortedBag.BULK_EDITS = LiveIndex.EDIT_BOUND = incremental._POSITIONAL_BOUND = 0
    try:
        yield
    finally:
        SortedBag.BULK_EDITS, LiveIndex.EDIT_BOUND, incremental._POSITIONAL_BOUND = saved


@pytest.mark.parametrize("tiny", [False, True], ids=["bisect", "bulk"])
@settings(SETTINGS, max_examples=100)
@given(configs(), snapshots(clustered=True), st.data())
def test_incremental_equals_cold_under_edits(
    tiny: bool, cfg: FabricConfig, snap: LXDSnapshot, data: st.DataObject
) -> None:
    """Edits keep every other record the same object, like an observer reusing what it read."""
    with _bounds(tiny):
        _edit_and_compare(cfg, snap, data)


def _edit_and_compare(cfg: FabricConfig, snap: LXDSnapshot, data: st.DataObject) -> None:
    planner = IncrementalPlanner(cfg)
    assert planner.update(snap) == plan_routes(snap, cfg)
    for _ in range(data.draw(st.integers(1, 8))):
        field = data.draw(st.sampled_from(FIELDS))
        items = list(getattr(snap, field))
        op = data.draw(st.sampled_from(("replace", "insert", "delete", "twice", "copy", "same")))
        at = data.draw(st.integers(0, max(len(items) - 1, 0)))
        if op == "insert" or not items:
            items.insert(at, data.draw(_record_strategy(field, True)))
        elif op == "replace":
            items[at] = data.draw(_record_strategy(field, True))
        elif op == "delete":
            del items[at]
        elif op == "twice":
            items.insert(data.draw(st.integers(0, len(items))), items[at])
        elif op == "copy":  # an equal record read again: a new object
            items[at] = copy.copy(items[at])
        changes: dict[str, Any] = {field: tuple(items)}
        snap = replace(snap, **changes)
        plan = planner.update(snap)
        assert plan == plan_routes(snap, cfg)
        check_invariants(snap, cfg, plan)


@pytest.mark.parametrize("tiny", [False, True], ids=["bisect", "bulk"])
@settings(SETTINGS, max_examples=100)
@given(
    st.integers(1, 6),
    st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(BRIDGE_NETS[:12]), st.booleans()),
        min_size=1,
        max_size=25,
    ),
)
def test_max_prefixes_follows_edits(tiny: bool, limit: int, edits: list[tuple[int, str, bool]]) -> None:
    cfg = config(f"routes:\n  allowed_ranges: [10.50.0.0/16]\n  max_prefixes: {limit}\n")
    slots: dict[int, InstanceRecord] = {}
    planner = IncrementalPlanner(cfg)
    with _bounds(tiny):
        for slot, prefix, running in edits:
            routes = nic("br0", {"ipv4.routes.external": prefix})
            slots[slot] = instance(f"c{slot}", routes, status="Running" if running else "Stopped")
            snap = snapshot(bridge(), *(slots[k] for k in sorted(slots)))
            plan = planner.update(snap)
            assert plan == plan_routes(snap, cfg)
            assert len(plan.routes) <= limit


_ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", "::a00:1", "fd00::1"]).map(ip_address)
_KEYED_ROUTES = st.builds(
    Route,
    st.sampled_from(["10.1.0.0/16", "10.1.0.0/24", "::/96", "fd00:1::/64"]).map(ip_network),
    _ADDRESSES,
    st.builds(Origin, st.sampled_from(["forward", "user-route"]), st.just("default"), st.sampled_from("ab")),
    st.builds(
        RouteAttributes,
        st.sampled_from([(), ("65000:1",)]),
        st.just(()),
        st.one_of(st.none(), st.integers(0, 10)),
        st.one_of(st.none(), st.integers(0, 10)),
    ),
)


@given(st.lists(_KEYED_ROUTES, max_size=12))
def test_route_key_is_routes_own_order_made_total(routes: list[Route]) -> None:
    assert len({route_key(r) for r in routes}) == len(set(routes))  # distinct routes never tie
    ordered = sorted(routes, key=route_key)
    assert [r.version for r in ordered] == sorted(r.version for r in routes)  # IPv4 first
    comparable = [r for r in ordered if r.attributes.med is not None and r.attributes.local_pref is not None]
    for version in (4, 6):
        same = [r for r in comparable if r.version == version == r.next_hop.version]
        assert same == sorted(same)
