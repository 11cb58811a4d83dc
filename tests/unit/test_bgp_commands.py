"""Routes as ExaBGP API lines, peer selection by family, and the desired-vs-sent difference."""

from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.bgp.commands import (
    DesiredState,
    RouteError,
    announce_line,
    carries,
    diff,
    full_announce,
    plan,
    withdraw_line,
)
from fabricd.config.model import PeerConfig
from fabricd.routes.model import Origin, Route, RouteAttributes, route_key

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
    assert carries(V4, A) and not carries(V4, B)
    assert carries(V6, B) and not carries(V6, A)
    assert carries(V4_BOTH, A) and not carries(V4_BOTH, B)  # v6 route never to a v4 session
    assert not carries(V6_NO_V6, B) and not carries(V6_NO_V6, A)  # family off; v4 route never to v6
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


def test_diff_new_gone_changed() -> None:
    peer = V4.address
    kept = route("10.200.2.0/24", "10.99.1.11")
    moved_old, moved_new = route("10.200.3.0/24", "10.99.1.11"), route("10.200.3.0/24", "10.99.1.12")
    med_old, med_new = (
        route("10.200.4.0/24", "10.99.1.11", med=1),
        route("10.200.4.0/24", "10.99.1.11", med=2),
    )
    sent = {r.prefix: r for r in (A, kept, moved_old, med_old)}
    desired = {r.prefix: r for r in (kept, moved_new, med_new, route("10.200.5.0/24", "10.99.1.11"))}
    commands = diff(peer, desired, sent)
    assert [(c.action, str(r.prefix)) for c in commands for r in c.routes] == [
        ("withdraw", "10.200.1.0/24"),
        ("announce", "10.200.3.0/24"),  # a new next hop replaces: no withdraw first
        ("announce", "10.200.4.0/24"),
        ("announce", "10.200.5.0/24"),
    ]
    assert commands[1].line.endswith("next-hop 10.99.1.12") and commands[2].line.endswith("med 2")


def test_diff_ignores_an_origin_only_change() -> None:
    renamed = route("10.200.1.0/24", "10.99.1.11", Origin("forward", "p", "n"))
    assert diff(V4.address, {A.prefix: renamed}, {A.prefix: A}) == []


def test_full_announce_covers_every_peer() -> None:
    lines = [c.line for c in full_announce(plan([A, B], [V4, V6]).by_peer)]
    assert lines == [announce_line(V4.address, A), announce_line(V6.address, B)]


_PREFIXES = st.sampled_from([f"10.200.{i}.0/24" for i in range(6)])
_ROUTES = st.builds(
    lambda p, h, m: route(p, f"10.99.1.{h}", med=m),
    _PREFIXES,
    st.integers(11, 13),
    st.one_of(st.none(), st.integers(0, 3)),
)


@given(st.lists(_ROUTES, max_size=8), st.lists(_ROUTES, max_size=8))
def test_applying_the_diff_reaches_the_desired_state(before: list[Route], after: list[Route]) -> None:
    peer = V4.address
    sent = dict(plan(before, [V4]).by_peer[peer])
    desired = plan(after, [V4]).by_peer[peer]
    for command in diff(peer, desired, sent, bulk=2):
        for r in command.routes:
            if command.action == "announce":
                sent[r.prefix] = r
            else:
                del sent[r.prefix]
    assert sent == desired
    assert diff(peer, desired, sent) == []


def test_routes_sharing_next_hop_and_attributes_go_as_bulk_lines() -> None:
    peer = V4.address
    a, b, c = (route(f"10.200.{i}.0/24", "10.99.1.11", med=5, communities=("65000:1",)) for i in (3, 1, 2))
    other = route("10.200.9.0/24", "10.99.1.12")
    commands = diff(peer, {r.prefix: r for r in (a, b, c, other)}, {}, bulk=2)
    assert [c.line for c in commands] == [
        "neighbor 10.99.1.1 announce attributes next-hop 10.99.1.11 med 5 community [65000:1]"
        " nlri 10.200.1.0/24 10.200.2.0/24",
        announce_line(peer, a),  # the rest of the chunk: one route alone keeps the route form
        announce_line(peer, other),
    ]
    assert [len(c.routes) for c in commands] == [2, 1, 1]
    gone = diff(peer, {}, {r.prefix: r for r in (a, b, c)})
    assert [c.line for c in gone] == [
        "neighbor 10.99.1.1 withdraw attributes next-hop 10.99.1.11"
        " nlri 10.200.1.0/24 10.200.2.0/24 10.200.3.0/24"
    ]
    v6 = [route(f"fd00:200:{i}::/64", "fd00:99:1::11") for i in (1, 2)]
    (line,) = [c.line for c in diff(V6.address, {r.prefix: r for r in v6}, {})]
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
    assert state.snapshot() == plan(routes, [V4, V6])


@given(st.lists(st.lists(_ROUTES, max_size=8), min_size=1, max_size=4))
def test_desired_state_matches_the_plan_from_scratch(sets: list[list[Route]]) -> None:
    state = DesiredState([V4, V4_BOTH])
    for routes in sets:
        state.update_all(routes)
        assert state.snapshot() == plan(routes, [V4, V4_BOTH])


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
