"""The health verdict fabricctl exits with: a pure function of the status reply."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fabricd.agent.health import DEGRADED, HEALTHY, verdict


def peer(name: str, state: str, last_error: str | None = None) -> dict[str, Any]:
    return {"name": name, "address": "10.0.0.1", "asn": 65000, "state": state, "last_error": last_error}


def route(prefix: str, state: str, reason: str | None = None) -> dict[str, Any]:
    return {"prefix": prefix, "state": state, "reason": reason}


HEALTHY_STATUS: dict[str, Any] = {
    "problems": [],
    "bgp_peers": [peer("r1", "established"), peer("r1-v6", "established")],
    "routes": [
        route("10.1.0.0/24", "announced"),
        route("10.2.0.0/24", "withheld", "instance is Stopped"),
        route("10.3.0.0/24", "pending", "waiting for r1 to acknowledge"),
    ],
}


def test_all_sessions_up_no_problem_is_healthy() -> None:
    found = verdict(HEALTHY_STATUS)
    assert found.code == HEALTHY and found.reasons == () and found.state == "healthy"


def test_no_bgp_and_nothing_else_is_healthy() -> None:
    assert verdict({"problems": [], "bgp_peers": [], "routes": []}).code == HEALTHY


def test_an_agent_before_its_first_pass_is_degraded() -> None:
    found = verdict({**HEALTHY_STATUS, "reconcile": {"passes": 0}})
    assert found.code == DEGRADED and found.reasons == ("starting: no reconcile pass has finished yet",)
    assert verdict({**HEALTHY_STATUS, "reconcile": {"passes": 1}}).code == HEALTHY


def test_a_listed_problem_is_degraded() -> None:
    found = verdict({**HEALTHY_STATUS, "problems": ["lxd unreachable since 12:00: gone"]})
    assert found.code == DEGRADED and found.reasons == ("lxd unreachable since 12:00: gone",)
    assert found.as_dict() == {"code": 3, "state": "degraded", "reasons": list(found.reasons)}


def test_a_session_not_established_is_degraded_with_its_error() -> None:
    status = {**HEALTHY_STATUS, "bgp_peers": [peer("r1", "established"), peer("r2", "idle", "hold timer")]}
    found = verdict(status)
    assert found.code == DEGRADED
    assert found.reasons == ("bgp peer r2 (10.0.0.1) is idle: hold timer",)


def test_a_refused_route_is_degraded_and_counted() -> None:
    routes = [
        route("10.9.0.0/24", "refused", "outside the allowed ranges"),
        route("0.0.0.0/0", "refused", "default route is never announced"),
    ]
    found = verdict({**HEALTHY_STATUS, "routes": HEALTHY_STATUS["routes"] + routes})
    assert found.code == DEGRADED
    (reason,) = found.reasons
    assert reason.startswith("2 route(s) refused: 10.9.0.0/24: outside the allowed ranges (and 1 more")


def test_problems_come_first_then_peers_then_routes() -> None:
    status = {
        "problems": ["second DHCP server on the overlay: 10.0.0.9"],
        "bgp_peers": [peer("r1", "connect")],
        "routes": [route("10.9.0.0/24", "refused", "bad")],
    }
    reasons = verdict(status).reasons
    assert [r.split()[0] for r in reasons] == ["second", "bgp", "1"]


STATES = ("idle", "connect", "established")
ROUTE_STATES = ("announced", "partial", "pending", "refused", "withheld")


@given(
    problems=st.lists(st.text(min_size=1, max_size=20), max_size=3),
    peer_states=st.lists(st.sampled_from(STATES), max_size=4),
    route_states=st.lists(st.sampled_from(ROUTE_STATES), max_size=6),
)
def test_degraded_exactly_when_something_is_wrong(
    problems: list[str], peer_states: list[str], route_states: list[str]
) -> None:
    status = {
        "problems": problems,
        "bgp_peers": [peer(f"p{i}", s) for i, s in enumerate(peer_states)],
        "routes": [route(f"10.{i}.0.0/24", s, "why") for i, s in enumerate(route_states)],
    }
    wrong = bool(problems) or any(s != "established" for s in peer_states) or "refused" in route_states
    found = verdict(status)
    assert found.code == (DEGRADED if wrong else HEALTHY)
    assert bool(found.reasons) == wrong
    expected = len(problems) + sum(s != "established" for s in peer_states) + ("refused" in route_states)
    assert len(found.reasons) == expected
