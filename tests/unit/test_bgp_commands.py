"""Routes as ExaBGP API lines, peer selection by family, and the desired set per peer."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.bgp.commands import (
    BULK_MAX,
    Action,
    Command,
    DesiredState,
    RouteError,
    announce_line,
    render_steps,
    withdraw_line,
)
from fabricd.config.model import PeerConfig
from fabricd.routes.model import IPAddress, IPNetwork, Origin, Route, RouteAttributes, route_key

V4 = PeerConfig("r1", ip_address("10.99.1.1"), 65000, families=("ipv4-unicast",))
V6 = PeerConfig("r1-v6", ip_address("fd00:99:1::1"), 65000, families=("ipv6-unicast",))
# An IPv4 session with the IPv6 family on: still never gets IPv6 routes (no IPv6 next hop on it).
V4_BOTH = PeerConfig("r2", ip_address("10.99.1.2"), 65000, families=("ipv4-unicast", "ipv6-unicast"))
V6_NO_V6 = PeerConfig("r3", ip_address("fd00:99:1::3"), 65000, families=("ipv4-unicast",))
ORIGIN = Origin("user-route", "default", "net")


def route(prefix: str, nh: str, origin: Origin = ORIGIN, **attrs: object) -> Route:
    return Route(ip_network(prefix), ip_address(nh), origin, RouteAttributes(**attrs))  # type: ignore[arg-type]


A = route("10.200.1.0/24", "10.99.1.11")
B = route("fd00:200:1::/64", "fd00:99:1::11")


@dataclass(frozen=True, slots=True)
class Desired:
    """A DesiredState as one value, its lists sorted."""

    routes: Mapping[IPNetwork, Route]
    by_peer: Mapping[IPAddress, Mapping[IPNetwork, Route]]
    duplicates: tuple[Route, ...] = ()
    invalid: tuple[tuple[Route, str], ...] = ()
    unreachable: tuple[Route, ...] = ()


def snapshot(state: DesiredState) -> Desired:
    return Desired(
        dict(state.routes),
        {a: dict(r) for a, r in state.by_peer.items()},
        tuple(sorted((r for rs in state.duplicates.values() for r in rs), key=route_key)),
        tuple(sorted(state.invalid.items(), key=lambda item: route_key(item[0]))),
        tuple(sorted(state.unreachable.values(), key=route_key)),
    )


def plan(routes: Collection[Route], peers: Sequence[PeerConfig]) -> Desired:
    """The desired state from scratch."""
    state = DesiredState(peers)
    state.update_all(routes)
    return snapshot(state)


def render(peer: IPAddress, action: Action, routes: Iterable[Route], bulk: int = BULK_MAX) -> list[Command]:
    return [c for c in render_steps(peer, action, list(routes), bulk) if c is not None]


def test_announce_and_withdraw_lines() -> None:
    peer = V4.address
    assert announce_line(peer, A) == "neighbor 10.99.1.1 announce route 10.200.1.0/24 next-hop 10.99.1.11"
    assert withdraw_line(peer, A) == "neighbor 10.99.1.1 withdraw route 10.200.1.0/24 next-hop 10.99.1.11"
    assert announce_line(V6.address, B) == (
        "neighbor fd00:99:1::1 announce route fd00:200:1::/64 next-hop fd00:99:1::11"
    )


def test_announce_line_with_every_attribute() -> None:
    full = route(
        "10.200.2.0/24",
        "10.99.1.11",
        med=10,
        local_pref=200,
        communities=("65000:1", "65000:2"),
        large_communities=("65000:1:2",),
    )
    assert announce_line(V4.address, full) == (
        "neighbor 10.99.1.1 announce route 10.200.2.0/24 next-hop 10.99.1.11 med 10 local-preference 200"
        " community [65000:1 65000:2] large-community [65000:1:2]"
    )
    assert announce_line(V4.address, route("10.0.0.0/8", "10.99.1.11", med=0)).endswith(" med 0")


@pytest.mark.parametrize(
    "bad",
    [
        route("10.200.1.0/24", "10.99.1.11", communities=("65536:1",)),
        route("10.200.1.0/24", "10.99.1.11", communities=("1:2 next-hop 1.2.3.4",)),
        route("10.200.1.0/24", "10.99.1.11", communities=("1:2]",)),
        route("10.200.1.0/24", "10.99.1.11", large_communities=("1:2",)),
        route("10.200.1.0/24", "10.99.1.11", large_communities=("4294967296:1:1",)),
        route("10.200.1.0/24", "10.99.1.11", med=-1),
        route("10.200.1.0/24", "10.99.1.11", local_pref=2**32),
        route("10.200.1.0/24", "fd00:99:1::11"),
    ],
)
def test_unrenderable_routes_are_refused(bad: Route) -> None:
    with pytest.raises(RouteError):
        announce_line(V4.address, bad)


def test_peer_selection_by_family_and_session_address() -> None:
    desired = plan([A, B], [V4, V6, V4_BOTH, V6_NO_V6])
    assert desired.by_peer[V4.address] == {A.prefix: A}
    assert desired.by_peer[V4_BOTH.address] == {A.prefix: A}
    assert desired.by_peer[V6.address] == {B.prefix: B}
    assert desired.by_peer[V6_NO_V6.address] == {}
    assert plan([B], [V4, V4_BOTH]).unreachable == (B,)


def test_duplicate_prefixes_keep_the_lowest_whatever_the_order() -> None:
    low, high = route("10.200.1.0/24", "10.99.1.11"), route("10.200.1.0/24", "10.99.1.12")
    for routes in ([low, high], [high, low]):
        desired = plan(routes, [V4])
        assert desired.routes == {low.prefix: low} and desired.duplicates == (high,)
    # The same announcement from another origin is no exception: owners are the planner's business.
    other = route("10.200.1.0/24", "10.99.1.11", Origin("forward", "default", "net"))
    same = plan([low, other], [V4])
    assert same.duplicates == (low,) and same.routes == {low.prefix: other}


def test_invalid_routes_are_set_aside_with_their_reason() -> None:
    bad = route("10.200.9.0/24", "10.99.1.11", communities=("x",))
    desired = plan([A, bad], [V4])
    assert desired.routes == {A.prefix: A}
    assert [(r, "community" in why) for r, why in desired.invalid] == [(bad, True)]


_PREFIXES = st.sampled_from([f"10.200.{i}.0/24" for i in range(6)])
_ROUTES = st.builds(
    lambda p, h, m: route(p, f"10.99.1.{h}", med=m),
    _PREFIXES,
    st.integers(11, 13),
    st.one_of(st.none(), st.integers(0, 3)),
)


def test_routes_sharing_next_hop_and_attributes_go_as_bulk_lines() -> None:
    peer = V4.address
    a, b, c = (route(f"10.200.{i}.0/24", "10.99.1.11", med=5, communities=("65000:1",)) for i in (3, 1, 2))
    other = route("10.200.9.0/24", "10.99.1.12")
    commands = render(peer, "announce", (a, b, c, other), bulk=2)
    assert [c.line for c in commands] == [
        "neighbor 10.99.1.1 announce attributes next-hop 10.99.1.11 med 5 community [65000:1]"
        " nlri 10.200.1.0/24 10.200.2.0/24",
        announce_line(peer, a),  # the rest of the chunk: one route alone keeps the route form
        announce_line(peer, other),
    ]
    assert [len(c.routes) for c in commands] == [2, 1, 1]
    gone = render(peer, "withdraw", (a, b, c))
    assert [c.line for c in gone] == [
        "neighbor 10.99.1.1 withdraw attributes next-hop 10.99.1.11"
        " nlri 10.200.1.0/24 10.200.2.0/24 10.200.3.0/24"
    ]
    v6 = [route(f"fd00:200:{i}::/64", "fd00:99:1::11") for i in (1, 2)]
    (line,) = [c.line for c in render(V6.address, "announce", v6)]
    assert line == (
        "neighbor fd00:99:1::1 announce attributes next-hop fd00:99:1::11"
        " nlri fd00:200:1::/64 fd00:200:2::/64"
    )


def test_desired_state_follows_changes_at_the_cost_of_what_changed() -> None:
    routes = [route(f"10.{i // 256}.{i % 256}.0/24", "10.99.1.11") for i in range(2000)]
    state = DesiredState([V4, V6])
    assert len(state.update_all(routes)) == 2000
    assert state.update_all(tuple(routes)) == set()  # same objects
    assert state.update_all([route(str(r.prefix), "10.99.1.11") for r in routes]) == set()  # equal values
    moved = route("10.0.5.0/24", "10.99.1.12")
    dup = route("10.0.6.0/24", "10.99.1.13")
    changed = state.update_all([*routes[:5], moved, *routes[6:], dup])
    assert changed == {moved.prefix} and state.by_peer[V4.address][moved.prefix] is moved
    assert state.new_duplicates == [dup] and state.duplicates == {dup.prefix: (dup,)}
    assert state.update_all(routes) == {moved.prefix}  # back; the duplicate leaves without a change
    assert state.duplicates == {} and state.by_peer[V4.address][moved.prefix] == routes[5]
    assert snapshot(state) == plan(routes, [V4, V6])


@given(st.lists(st.lists(_ROUTES, max_size=8), min_size=1, max_size=4))
def test_desired_state_matches_the_plan_from_scratch(sets: list[list[Route]]) -> None:
    state = DesiredState([V4, V4_BOTH])
    for routes in sets:
        state.update_all(routes)
        assert snapshot(state) == plan(routes, [V4, V4_BOTH])


_OWNED_ROUTES = st.builds(
    lambda p, h, m, kind: route(p, f"10.99.1.{h}", Origin(kind, "default", "net"), med=m),
    _PREFIXES,
    st.integers(11, 13),
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from(["forward", "user-route"]),
)


@given(st.lists(st.lists(_OWNED_ROUTES, max_size=8), min_size=1, max_size=5), st.randoms())
def test_routes_handed_twice_for_a_prefix_never_corrupt_the_desired_state(
    sets: list[list[Route]], rnd: random.Random
) -> None:
    """The planner sends one route per prefix; if a caller sends more, exactly one still goes out:
    the lowest of those handed over, whatever their order, and the others wait as duplicates."""
    state = DesiredState([V4, V6])
    for routes in sets:
        handed = [route(str(r.prefix), str(r.next_hop), r.origin, med=r.attributes.med) for r in routes]
        rnd.shuffle(handed)  # equal values as new objects, in another order
        state.update_all(handed)
        by_prefix: dict[object, set[Route]] = {}
        for r in routes:
            by_prefix.setdefault(r.prefix, set()).add(r)
        lowest = {prefix: min(group, key=route_key) for prefix, group in by_prefix.items()}
        assert state.routes == lowest
        assert state.by_peer == {V4.address: lowest, V6.address: {}}
        assert {p: set(d) for p, d in state.duplicates.items()} == {
            p: group - {lowest[p]} for p, group in by_prefix.items() if len(group) > 1
        }
