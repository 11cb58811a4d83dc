"""OVN services through LXD network forwards: the manager, the forward's target, the steps, the states."""

from __future__ import annotations

import dataclasses
import random
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config.model import BackendSelector, HealthCheckConfig, ServiceConfig
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import (
    InstanceRecord,
    ListenerRecord,
    LXDSnapshot,
    MemberRecord,
    NetworkRecord,
    NicRecord,
)
from fabricd.services.definitions import resolve_services
from fabricd.services.health import BackendHealth, CheckResult, Rules, record, start
from fabricd.services.model import OWNED_FORWARD, BackendId, ForwardStep, NetworkKey
from fabricd.services.ovn_forwards import (
    OvnForwardPlan,
    managing_member,
    plan_ovn_forwards,
)

ANYCAST = ip_address("10.211.64.53")
DNS = ServiceConfig("dns", (ANYCAST,), BackendSelector(pattern="dns-*"), HealthCheckConfig("tcp", 53))
OVN0 = NetworkRecord("default", "ovn0", "ovn", True, FrozenMap({"ipv4.address": "10.211.1.1/24"}))
OVN1 = NetworkRecord("default", "ovn1", "ovn", True, FrozenMap({"ipv4.address": "10.211.2.1/24"}))
KEY0 = NetworkKey("default", "ovn0")
MEMBERS = (MemberRecord("m2", "Online"), MemberRecord("m1", "Online"), MemberRecord("m3", "Online"))


def inst(name: str, address: str, network: str = "ovn0", location: str = "m1",
         status: str = "Running") -> InstanceRecord:  # fmt: skip
    nic = NicRecord("eth0", FrozenMap({"network": network}), addresses=(f"{address}/24",))
    return InstanceRecord("default", name, "container", status, location, (nic,))


def forward(target: str) -> ListenerRecord:
    return ListenerRecord(
        "forward", "default", "ovn0", str(ANYCAST), "", FrozenMap({"target_address": target})
    )


def snap(*instances: InstanceRecord, member: str = "m1", forwards: tuple[ListenerRecord, ...] = (),
         members: tuple[MemberRecord, ...] = MEMBERS) -> LXDSnapshot:  # fmt: skip
    return LXDSnapshot(member, True, ("default",), (OVN0, OVN1), instances, forwards, members=members)


def health(up: set[str], down: set[str] = frozenset()) -> dict[BackendId, BackendHealth]:  # type: ignore[assignment]
    rules = Rules(rise=1, fall=1)
    out = {}
    for name in up | down:
        result = CheckResult(name in up, "ok" if name in up else "timeout", 1)
        out[BackendId("dns", "default", name)] = record(start(0), result, rules, 1).health
    return out


def plan(snapshot: LXDSnapshot, healths: dict[BackendId, BackendHealth]) -> OvnForwardPlan:
    definitions = resolve_services((DNS,), snapshot.instances)
    return plan_ovn_forwards(definitions.services, snapshot, definitions, healths)


B1, B2 = inst("dns-1", "10.211.1.11", location="m2"), inst("dns-2", "10.211.1.12", location="m3")


def test_manager_is_the_lowest_online_member_or_the_server_itself() -> None:
    assert managing_member(snap()) == "m1"
    offline = (MemberRecord("m1", "Offline"), MemberRecord("m2", "Evacuated"), MemberRecord("m3", "Online"))
    assert managing_member(snap(members=offline)) == "m3"
    assert managing_member(snap(members=(MemberRecord("m1", "Offline"),))) is None
    assert managing_member(LXDSnapshot("none", False)) == "none"


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.sampled_from(["Online", "Offline"])), unique_by=lambda m: m[0]
    )
)
def test_every_member_picks_the_same_manager(members: list[tuple[str, str]]) -> None:
    records = [MemberRecord(name, status) for name, status in members]
    online = sorted(name for name, status in members if status == "Online")
    for viewer in "abcdef":
        random.shuffle(records)
        assert managing_member(snap(member=viewer, members=tuple(records))) == (online[0] if online else None)


def test_the_manager_checks_every_ovn_backend_and_forwards_to_the_lowest_serving() -> None:
    out = plan(snap(B2, B1), health({"dns-1", "dns-2"}))
    assert out.manager == "m1"
    assert [str(c.target) for c in out.checks] == ["10.211.1.11", "10.211.1.12"]
    assert out.steps == (ForwardStep(KEY0, str(ANYCAST), "create", "10.211.1.11"),)
    assert out.addresses[0].state == "withdrawn" and "waiting for LXD" in out.addresses[0].reason
    # Once LXD lists it, the address counts as announced (the route planner announces the forward).
    listed = plan(snap(B1, B2, forwards=(forward("10.211.1.11"),)), health({"dns-1", "dns-2"}))
    assert listed.steps == () and listed.addresses[0].state == "announced"


def test_other_members_neither_check_nor_write_and_show_what_lxd_lists() -> None:
    out = plan(snap(B1, B2, member="m2"), {})
    assert out.manager == "m1" and out.checks == () and out.steps == ()
    assert {b.problem for b in out.backends} == {"checked by member m1, which manages the service's forward"}
    assert (out.addresses[0].state, out.addresses[0].reason) == (
        "withdrawn",
        "no forward listed (managed by member m1)",
    )
    listed = plan(snap(B1, B2, member="m2", forwards=(forward("10.211.1.12"),)), {})
    assert (listed.addresses[0].state, listed.addresses[0].reason) == (
        "announced",
        "forward to 10.211.1.12 (managed by member m1)",
    )


def test_a_failed_backend_moves_the_target_and_none_serving_deletes_the_forward() -> None:
    listed = snap(B1, B2, forwards=(forward("10.211.1.11"),))
    moved = plan(listed, health({"dns-2"}, {"dns-1"}))
    assert moved.steps == (ForwardStep(KEY0, str(ANYCAST), "update", "10.211.1.12"),)
    gone = plan(listed, health(set(), {"dns-1", "dns-2"}))
    assert gone.steps == (ForwardStep(KEY0, str(ANYCAST), "delete"),)
    assert gone.addresses[0].state == "withdrawn"
    assert "dns-1 down: timeout" in gone.addresses[0].reason and "dns-2 down" in gone.addresses[0].reason


def test_backends_on_a_second_ovn_network_are_refused_with_the_reason() -> None:
    other = inst("dns-3", "10.211.2.13", network="ovn1")
    stopped = inst("dns-4", "10.211.1.14", status="Stopped")
    out = plan(snap(B1, other, stopped), health({"dns-1", "dns-3"}))
    problems = {b.id.instance: b.problem for b in out.backends}
    assert "the service uses ovn0" in problems["dns-3"] and problems["dns-4"] == "instance is Stopped"
    assert [c.id.instance for c in out.checks] == ["dns-1"]
    assert out.steps == (ForwardStep(KEY0, str(ANYCAST), "create", "10.211.1.11"),)


NAMES = [f"dns-{i}" for i in range(1, 6)]


@settings(max_examples=200)
@given(
    st.sets(st.sampled_from(NAMES), min_size=1),
    st.sets(st.sampled_from(NAMES)),
    st.one_of(st.none(), st.sampled_from(NAMES)),
    st.randoms(),
)
def test_applying_the_steps_reaches_the_lowest_serving_backend(
    present: set[str], serving: set[str], listed_on: str | None, rng: random.Random
) -> None:
    address = {name: f"10.211.1.{10 + int(name[-1])}" for name in NAMES}
    instances = [inst(n, address[n], location=rng.choice(["m1", "m2", "m3"])) for n in present]
    rng.shuffle(instances)
    forwards = (forward(address[listed_on]),) if listed_on else ()
    healths = health(serving & present, present - serving)
    out = plan(snap(*instances, forwards=forwards), healths)
    target = address[listed_on] if listed_on else None
    for step in out.steps:  # what LXD holds after the manager's calls
        target = None if step.action == "delete" else step.target
    wanted = sorted(serving & present)
    assert target == (address[wanted[0]] if wanted else None)
    assert len(out.steps) <= 1 and out == plan(snap(*reversed(instances), forwards=forwards), healths)


def test_a_refused_address_gets_no_forward() -> None:
    snapshot = snap(B1)
    definitions = resolve_services((DNS,), snapshot.instances)
    out = plan_ovn_forwards(
        definitions.services, snapshot, definitions, health({"dns-1"}), lambda s, a: "outside"
    )
    assert out.steps == () and [(a.state, a.reason) for a in out.addresses] == [("refused", "outside")]


def test_the_manager_deletes_the_forwards_it_wrote_that_no_service_wants() -> None:
    target = FrozenMap({"target_address": "10.211.1.11"})
    owned = ListenerRecord("forward", "default", "ovn0", "10.211.64.99", "", target, OWNED_FORWARD)
    by_hand = ListenerRecord("forward", "default", "ovn0", "10.211.64.98", "", target)
    out = plan(snap(B1, forwards=(owned, by_hand, forward("10.211.1.11"))), health({"dns-1"}))
    assert out.steps == (ForwardStep(KEY0, "10.211.64.99", "delete"),)
    # The service's own forward goes too once every backend is stopped (and when none is left).
    stopped = inst("dns-1", "10.211.1.11", location="m2", status="Stopped")
    mine = dataclasses.replace(forward("10.211.1.11"), description=OWNED_FORWARD)
    for instances in ((stopped,), ()):
        gone = plan(snap(*instances, forwards=(mine,)), health({"dns-1"}))
        assert gone.steps == (ForwardStep(KEY0, str(ANYCAST), "delete"),)
