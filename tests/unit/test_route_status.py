"""Route rows: announced only where the route really went, per peer."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.bgp.speaker import PeerRouteState, SpeakerView, overall
from fabricd.routes.model import Origin, Refusal, Route, RouteAttributes, RoutePlan
from fabricd.routes.status import PerPeer, RouteRows, route_rows

ORIGIN = Origin("nic-external-route", "default", "lxdbr0", "web1")
V4 = Route(ip_network("10.201.1.0/24"), ip_address("10.99.1.11"), ORIGIN, note="next-hop self: why")
V6 = Route(ip_network("fd00:201::/64"), ip_address("fd00:99:1::11"), ORIGIN)


def view(sessions: tuple[tuple[str, bool, frozenset, dict], ...]) -> SpeakerView:  # type: ignore[type-arg]
    return SpeakerView((), {V4.prefix: V4, V6.prefix: V6}, sessions, (), 1)


def test_announced_needs_every_established_peer_it_is_meant_for() -> None:
    assert overall((("r1", "announced"), ("r2", "announced"))) == "announced"
    assert overall((("r1", "announced"), ("r2", "pending"))) == "partial"
    assert overall((("r1", "announced"), ("r2", "session down"))) == "announced"
    assert overall((("r1", "session down"),)) == "pending"
    assert overall(()) == "pending"


def test_rows_show_each_peer_and_why_a_route_is_not_everywhere() -> None:
    both = frozenset({V4.prefix})
    per_peer = view(
        (
            ("r1", True, both, {V4.prefix: V4}),
            ("r2", True, both, {}),
            ("r1-v6", False, frozenset({V6.prefix}), {}),
        )
    ).per_peer()
    plan = RoutePlan((V4, V6), refused=(Refusal("0.0.0.0/0", ORIGIN, "default route is never announced"),))
    rows = {r["prefix"]: r for r in route_rows(plan, per_peer)}
    v4, v6 = rows["10.201.1.0/24"], rows["fd00:201::/64"]
    assert v4["state"] == "partial" and v4["peers"] == {"r1": "announced", "r2": "pending"}
    assert v4["reason"] == "not yet acknowledged by r2" and v4["note"] == "next-hop self: why"
    assert v6["state"] == "pending" and v6["reason"] == "no session it is meant for is up (r1-v6 down)"
    assert rows["0.0.0.0/0"]["state"] == "refused"


def test_a_stale_ack_does_not_count() -> None:
    moved = Route(V4.prefix, ip_address("10.99.1.12"), ORIGIN)
    per_peer = view((("r1", True, frozenset({V4.prefix}), {V4.prefix: moved}),)).per_peer()
    assert per_peer[V4] == (("r1", "pending"),)


def test_without_a_speaker_nothing_is_announced() -> None:
    (row,) = route_rows(RoutePlan((V4,)), None)
    assert row["state"] == "pending" and "no bgp section" in row["reason"]


def test_a_rebuild_keeps_the_rows_of_unchanged_routes_and_makes_the_others_anew() -> None:
    other = Route(ip_network("10.201.2.0/24"), ip_address("10.99.1.11"), ORIGIN)
    builder = RouteRows()
    first = builder.build(RoutePlan((V4, V6, other)), {V4: (("r1", "pending"),), V6: (), other: ()})
    noted = replace(other, note="a new note")  # equal as a route, but its row shows the note
    again = builder.build(RoutePlan((V4, V6, noted)), {V4: (("r1", "announced"),), V6: (), noted: ()})
    assert again[1] is first[1]  # V6: same route, same peers
    assert again[0] is not first[0] and again[0]["state"] == "announced"
    assert again[2] is not first[2] and again[2]["note"] == "a new note"
    assert builder.build(RoutePlan((V6,)), None)[0]["reason"] == "no bgp section: nothing is announced"


POOL = [
    Route(ip_network(f"10.201.{i}.0/24"), ip_address(f"10.99.1.{11 + i % 2}"), ORIGIN, note=note)
    for i in range(4)
    for note in ("", "next-hop self")
] + [Route(ip_network("fd00:201::/64"), ip_address("fd00:99:1::11"), ORIGIN, RouteAttributes(med=5))]
STATES: list[PeerRouteState] = ["announced", "pending", "session down"]
peers = st.lists(st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(STATES)), max_size=2).map(tuple)
rounds = st.lists(
    st.tuples(
        st.lists(st.sampled_from(POOL), unique=True),
        st.none() | st.lists(peers, min_size=len(POOL), max_size=len(POOL)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(rounds=rounds)
def test_a_builder_always_answers_what_a_fresh_build_does(
    rounds: list[tuple[list[Route], list[PerPeer] | None]],
) -> None:
    builder = RouteRows()
    for routes, states in rounds:
        plan = RoutePlan(tuple(routes))
        per_peer = None if states is None else dict(zip(POOL, states, strict=True))
        assert builder.build(plan, per_peer) == route_rows(plan, per_peer)
