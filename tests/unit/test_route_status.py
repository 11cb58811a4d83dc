"""Route rows: announced only where the route really went, per peer."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from fabricd.bgp.speaker import SpeakerView, overall
from fabricd.routes.model import Origin, Refusal, Route, RoutePlan
from fabricd.routes.status import route_rows

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
