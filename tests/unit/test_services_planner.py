"""The service planner: host routes, announcements and the reasons for what is withheld."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config.model import (
    BackendSelector,
    FabricConfig,
    HealthCheckConfig,
    HostConfig,
    RoutesConfig,
    ServiceConfig,
)
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord, NicRecord
from fabricd.routes.merge import merge_route_plans
from fabricd.routes.model import Origin, Route, RouteAttributes, RoutePlan
from fabricd.services.health import BackendHealth, CheckResult, Rules, record, start
from fabricd.services.instance_keys import PREFIX
from fabricd.services.model import (
    GRACEFUL_SHUTDOWN,
    AddressState,
    BackendCheck,
    BackendId,
    DrainState,
    HostRoute,
    NextHop,
    ServicePlan,
)
from fabricd.services.ordering import ordered_steps
from fabricd.services.planner import ServiceInputs, plan_services

V4, V6 = IPv4Address("192.0.2.11"), IPv6Address("2001:db8:100::11")
DNS4, DNS6 = ip_address("10.250.0.53"), ip_address("2001:db8:250::53")
CHECK = HealthCheckConfig("dns", 53, query="dns.example")
DNS = ServiceConfig("dns", (DNS4, DNS6), BackendSelector(pattern="dns-*"), CHECK, med=10,
                    communities=("65000:53",))  # fmt: skip
BRIDGE = NetworkRecord("default", "lxdbr0", "bridge", True,
                       FrozenMap({"ipv4.address": "10.0.0.1/24", "ipv6.address": "fd00::1/64"}))  # fmt: skip
OVN = NetworkRecord("default", "ovn0", "ovn", True, FrozenMap({"network": "UPLINK"}))
ORIGIN = Origin("service", "default", "dns", "", "addresses")


def fabric(*services: ServiceConfig, v6: bool = True, **routes: Any) -> FabricConfig:
    host = HostConfig("h1", V4, V6 if v6 else None)
    return FabricConfig(Path("t.yaml"), host, services=services, routes=RoutesConfig(**routes))


def nic(*addresses: str, network: str = "lxdbr0", device: str = "eth0") -> NicRecord:
    return NicRecord(device, FrozenMap({"network": network}), addresses=addresses)


def overlay_nic(*addresses: str) -> NicRecord:
    return NicRecord("eth0", FrozenMap({"nictype": "bridged", "parent": "fabric0"}), addresses=addresses)


def inst(name: str, *nics: NicRecord, location: str = "h1", status: str = "Running",
         config: dict[str, str] | None = None) -> InstanceRecord:  # fmt: skip
    return InstanceRecord("default", name, "container", status, location, nics, FrozenMap(config or {}))


DNS1 = inst("dns-1", nic("10.0.0.11/24", "fd00::11/64", "fe80::1/64"))
DNS2 = inst("dns-2", nic("10.0.0.12/24", "fd00::12/64"))


def snap(*instances: InstanceRecord) -> LXDSnapshot:
    return LXDSnapshot("h1", True, ("default",), (BRIDGE, OVN), instances)


def up(*names: str, service: str = "dns") -> dict[BackendId, BackendHealth]:
    rules = Rules(rise=1, fall=1)
    healths = {}
    for name in names:
        healths[BackendId(service, "default", name)] = record(
            start(0), CheckResult(True, "ok", 1), rules, 1
        ).health
    return healths


def down(*names: str) -> dict[BackendId, BackendHealth]:
    rules = Rules(rise=1, fall=1)
    fail = CheckResult(False, "timeout", 1)
    return {BackendId("dns", "default", n): record(start(0), fail, rules, 1).health for n in names}


def plan(
    config: FabricConfig,
    snapshot: LXDSnapshot,
    health: dict[BackendId, BackendHealth],
    installed: tuple[HostRoute, ...] | None = None,
    drains: DrainState | None = None,
    now: float = 1000.0,
) -> ServicePlan:
    """`installed` None: whatever the plan wants is installed (the applier caught up)."""
    inputs = ServiceInputs(config, snapshot, "h1", health, drains or DrainState(), installed or (), now)
    first = plan_services(inputs)
    if installed is not None:
        return first
    return plan_services(replace(inputs, installed=first.host_routes))


def hop(address: str, device: str = "lxdbr0") -> NextHop:
    return NextHop(ip_address(address), device)


def test_healthy_backends_get_an_ecmp_host_route_and_one_announcement_per_address() -> None:
    result = plan(fabric(DNS), snap(DNS1, DNS2), up("dns-1", "dns-2"))
    assert result.host_routes == (
        HostRoute(ip_network("10.250.0.53/32"), (hop("10.0.0.11"), hop("10.0.0.12"))),
        HostRoute(ip_network("2001:db8:250::53/128"), (hop("fd00::11"), hop("fd00::12"))),
    )
    attributes = RouteAttributes(("65000:53",), (), 10, None)
    assert result.routes == RoutePlan(
        (
            Route(ip_network("10.250.0.53/32"), V4, ORIGIN, attributes),
            Route(ip_network("2001:db8:250::53/128"), V6, ORIGIN, attributes),
        )
    )
    assert [a.state for a in result.addresses] == ["announced", "announced"]
    assert result.addresses[0].reason == "healthy: dns-1, dns-2"
    assert result.checks == (
        BackendCheck(BackendId("dns", "default", "dns-1"), ip_address("10.0.0.11")),
        BackendCheck(BackendId("dns", "default", "dns-2"), ip_address("10.0.0.12")),
    )


def test_nothing_is_announced_before_its_host_route_is_installed() -> None:
    result = plan(fabric(DNS), snap(DNS1), up("dns-1"), installed=())
    assert result.routes.routes == ()
    assert len(result.host_routes) == 2
    assert result.addresses[0] == AddressState(
        "dns", DNS4, "withdrawn", "waiting for the host route to 10.250.0.53/32 via 10.0.0.11 dev lxdbr0"
    )
    # an installed route that still has one wanted next hop is enough (ECMP being widened)
    partial = (HostRoute(ip_network("10.250.0.53/32"), (hop("10.0.0.11"),)),)
    result = plan(fabric(DNS), snap(DNS1, DNS2), up("dns-1", "dns-2"), installed=partial)
    assert [r.prefix for r in result.routes.routes] == [ip_network("10.250.0.53/32")]
    # but one whose next hops are all gone is not
    stale = (HostRoute(ip_network("10.250.0.53/32"), (hop("10.0.0.99"),)),)
    assert plan(fabric(DNS), snap(DNS1), up("dns-1"), installed=stale).routes.routes == ()


def test_plans_taken_through_the_ordering_rules_route_first_and_withdraw_first() -> None:
    """Pass by pass, as the applier will run them: the first pass installs, the next announces
    (the planner waits for the route's report), and a backend going down withdraws, then unroutes."""
    first = plan(fabric(DNS), snap(DNS1), up("dns-1"), installed=())
    steps = ordered_steps((), (), first.host_routes, first.routes.routes).steps
    assert [s.kind for s in steps] == ["route.install", "route.install"]
    second = plan(fabric(DNS), snap(DNS1), up("dns-1"), installed=first.host_routes)
    steps = ordered_steps(first.host_routes, (), second.host_routes, second.routes.routes).steps
    assert [(s.kind, s.requires) for s in steps] == [("bgp.announce", None), ("bgp.announce", None)]
    gone = plan(fabric(DNS), snap(DNS1), down("dns-1"), installed=second.host_routes)
    steps = ordered_steps(
        second.host_routes, second.routes.routes, gone.host_routes, gone.routes.routes
    ).steps
    assert [(s.kind, str(s.prefix), s.requires) for s in steps] == [
        ("bgp.withdraw", "10.250.0.53/32", None),
        ("bgp.withdraw", "2001:db8:250::53/128", None),
        ("route.remove", "10.250.0.53/32", "bgp.withdraw"),
        ("route.remove", "2001:db8:250::53/128", "bgp.withdraw"),
    ]


def test_without_a_healthy_backend_the_route_and_announcement_go() -> None:
    result = plan(fabric(DNS), snap(DNS1, DNS2), {**up("dns-2"), **down("dns-1")})
    assert result.host_routes[0].next_hops == (hop("10.0.0.12"),)
    result = plan(fabric(DNS), snap(DNS1, DNS2), down("dns-1"))
    assert (result.host_routes, result.routes.routes) == ((), ())
    assert result.addresses[0].reason == (
        "no healthy backend here (dns-1 down: timeout; dns-2 not checked yet)"
    )
    assert {w.reason for w in result.routes.withheld} == {result.addresses[0].reason}


def test_degrade_keeps_a_worse_announcement_through_checked_backends() -> None:
    service = replace(DNS, on_failure="degrade", degraded_med=500, degraded_communities=("65000:666",))
    result = plan(fabric(service), snap(DNS1, DNS2), down("dns-1"))  # dns-2 never checked: not used
    assert result.host_routes[0].next_hops == (hop("10.0.0.11"),)
    route = result.routes.routes[0]
    assert route.attributes == RouteAttributes(("65000:53", "65000:666"), (), 500, None)
    assert result.addresses[0].state == "degraded"
    healthy = plan(fabric(service), snap(DNS1, DNS2), {**down("dns-1"), **up("dns-2")})
    assert healthy.routes.routes[0].attributes.med == 10
    assert healthy.host_routes[0].next_hops == (hop("10.0.0.12"),)


def test_drain_announces_graceful_shutdown_then_withdraws_and_keeps_the_route() -> None:
    drains = DrainState(services=FrozenMap({"dns": 1000.0}))
    result = plan(fabric(DNS), snap(DNS1), up("dns-1"), drains=drains, now=1004.0)
    route = result.routes.routes[0]
    assert route.attributes == RouteAttributes(("65000:53", GRACEFUL_SHUTDOWN), (), 4294967294, None)
    assert [a.state for a in result.addresses] == ["draining", "draining"]
    assert result.wake_at == 1010.0
    later = plan(fabric(DNS), snap(DNS1), up("dns-1"), drains=drains, now=1010.0)
    assert later.routes.routes == () and later.wake_at is None
    assert later.addresses[0].reason == "drained (withdrawn 10 s after the drain)"
    assert later.host_routes == result.host_routes  # traffic still arriving is delivered
    host_drain = plan(fabric(DNS), snap(DNS1), up("dns-1"), drains=DrainState(host=999.0), now=1004.0)
    assert host_drain.wake_at == 1009.0


def test_only_this_members_running_routable_instances_are_backends() -> None:
    instances = (
        DNS1,
        inst("dns-remote", nic("10.0.0.13/24"), location="h2"),
        inst("dns-stopped", nic(), status="Stopped"),
        inst("dns-ovn", nic("10.1.0.5/24", network="ovn0")),
        inst("dns-noaddr", nic("fe80::5/64", "10.9.9.9/24")),  # outside the bridge subnet
        inst("web-1", nic("10.0.0.20/24")),  # not selected by the pattern
    )
    result = plan(fabric(DNS), snap(*instances), up("dns-1"))
    problems = {b.id.instance: b.problem for b in result.backends}
    assert problems["dns-1"] == ""
    assert problems["dns-stopped"] == "instance is Stopped"
    # OVN backends go through an LXD forward (ovn_forwards.py); ovn0 here has no subnet to match.
    assert problems["dns-ovn"] == "eth0 on ovn0 has no usable address yet"
    assert problems["dns-noaddr"] == "eth0 on lxdbr0 has no usable address yet"
    assert set(problems) == {"dns-1", "dns-stopped", "dns-ovn", "dns-noaddr"}
    assert [c.id.instance for c in result.checks] == ["dns-1"]


def test_overlay_backends_route_through_the_unmanaged_bridge() -> None:
    service = replace(DNS, addresses=(DNS4,), backends=BackendSelector(instances=("o1",), network="fabric0"))
    o1 = inst(
        "o1", nic("10.0.0.30/24"), replace(overlay_nic("10.200.0.30/24", "10.250.0.53/32"), device="eth1")
    )
    result = plan(fabric(service), snap(o1), up("o1"))
    # the NIC on the named bridge, and never the anycast address the backend carries itself
    assert result.host_routes == (HostRoute(ip_network("10.250.0.53/32"), (hop("10.200.0.30", "fabric0"),)),)


def test_a_backend_without_an_address_of_the_family_serves_only_the_other() -> None:
    v4only = inst("dns-1", nic("10.0.0.11/24"))
    result = plan(fabric(DNS), snap(v4only), up("dns-1"))
    assert [a.state for a in result.addresses] == ["announced", "withdrawn"]
    assert result.addresses[1].reason == "no healthy backend here (dns-1 no IPv6 address)"
    only6 = replace(DNS, addresses=(DNS6,))
    result = plan(fabric(only6), snap(v4only), up("dns-1"))
    assert result.backends[0].problem == "no IPv6 address on lxdbr0"
    assert result.checks == ()


def test_without_an_ipv6_underlay_address_ipv6_is_withheld() -> None:
    result = plan(fabric(DNS, v6=False), snap(DNS1), up("dns-1"))
    assert [a.state for a in result.addresses] == ["announced", "withdrawn"]
    assert result.addresses[1].reason == "no IPv6 next hop: set host.underlay_address6"


def test_without_a_check_a_running_backend_serves() -> None:
    result = plan(fabric(replace(DNS, check=None)), snap(DNS1), {})
    assert len(result.routes.routes) == 2 and result.checks == ()


def test_exec_checks_have_no_target_address() -> None:
    service = replace(DNS, check=HealthCheckConfig("exec", command=("/bin/true",)))
    assert plan(fabric(service), snap(DNS1), up("dns-1")).checks == (
        BackendCheck(BackendId("dns", "default", "dns-1"), None),
    )


def test_policy_config_addresses_are_allowed_instance_ones_must_be_in_allowed_ranges() -> None:
    special = replace(DNS, addresses=(ip_address("10.250.0.53"),))
    assert plan(fabric(special, max_prefix_length_v4=24), snap(DNS1), up("dns-1")).addresses[
        0
    ] == AddressState(
        "dns", DNS4, "refused", "10.250.0.53/32 is longer than /24 (routes.max_prefix_length_v4)"
    )
    defined = {f"{PREFIX}echo.addresses": "10.251.0.7", f"{PREFIX}echo.check.type": "tcp",
               f"{PREFIX}echo.check.port": "7"}  # fmt: skip
    echo = inst("e1", nic("10.0.0.40/24"), config=defined)
    result = plan(fabric(), snap(echo), up("e1", service="echo"))
    assert result.addresses[0].state == "refused"
    assert "outside the allowed ranges of routes.allowed_ranges" in result.addresses[0].reason
    allowed = fabric(allowed_ranges=(ip_network("10.251.0.0/24"),))
    result = plan(allowed, snap(echo), up("e1", service="echo"))
    assert [(a.service, a.state) for a in result.addresses] == [("echo", "announced")]
    assert result.routes.routes[0].origin == Origin("service", "default", "echo", "", "addresses")


def test_service_routes_join_lxd_routes_and_lose_a_prefix_lxd_already_announces() -> None:
    result = plan(fabric(DNS), snap(DNS1), up("dns-1"))
    lxd_route = Route(
        ip_network("10.250.0.53/32"), V4, Origin("forward", "default", "lxdbr0", "", "10.250.0.53")
    )
    merged = merge_route_plans([RoutePlan((lxd_route,)), result.routes], 100)
    assert [r.origin.kind for r in merged.routes] == ["forward", "service"]
    assert (
        merged.refused[0].reason
        == "10.250.0.53/32 is already announced for forward:default/lxdbr0[10.250.0.53]"
    )


# --- properties ---------------------------------------------------------------------------------

states = st.sampled_from(["none", "up", "falling", "down", "rising"])


def health_of(state: str) -> BackendHealth | None:
    rules = Rules(rise=1, fall=2)
    h = start(0)
    for ok in {"none": "", "up": "+", "falling": "+-", "down": "+--", "rising": "-"}[state]:
        h = record(h, CheckResult(ok == "+", "r", 1), rules, 1).health
    return None if state == "none" else h


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[FabricConfig, LXDSnapshot, dict[BackendId, BackendHealth], DrainState]:
    count = draw(st.integers(0, 5))
    instances = []
    healths = {}
    for n in range(count):
        name = f"dns-{n}"
        location = draw(st.sampled_from(["h1", "h1", "h2"]))
        addresses = draw(st.sets(st.sampled_from([f"10.0.0.{10 + n}/24", f"fd00::{10 + n}/64"])))
        status = draw(st.sampled_from(["Running", "Running", "Stopped"]))
        instances.append(inst(name, nic(*sorted(addresses)), location=location, status=status))
        state = health_of(draw(states))
        if state is not None:
            healths[BackendId("dns", "default", name)] = state
    on_failure = draw(st.sampled_from(["withdraw", "degrade"]))
    service = replace(DNS, on_failure=on_failure, degraded_med=99 if on_failure == "degrade" else None)
    drains = draw(
        st.sampled_from(
            [DrainState(), DrainState(services=FrozenMap({"dns": 995.0})), DrainState(host=900.0)]
        )
    )
    return fabric(service), snap(*instances), healths, drains


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_invariants(scenario: Any, rng: random.Random) -> None:
    config, snapshot, healths, drains = scenario
    result = plan(config, snapshot, healths, drains=drains)
    # the same answer for any order of LXD's lists
    shuffled = list(snapshot.instances)
    rng.shuffle(shuffled)
    assert plan(config, replace(snapshot, instances=tuple(shuffled)), healths, drains=drains) == result
    # every address has exactly one state, and a withheld one says why
    assert [(a.service, a.address) for a in result.addresses] == [("dns", DNS4), ("dns", DNS6)]
    routes = {r.prefix: r for r in result.routes.routes}
    host_routes = {h.prefix: h for h in result.host_routes}
    for state in result.addresses:
        prefix = ip_network(state.address)
        assert state.reason
        assert (prefix in routes) == (state.state in ("announced", "degraded", "draining"))
    for prefix, route in routes.items():
        # announced only with a host route, via this host, through healthy (or checked) local backends
        assert prefix in host_routes
        assert route.next_hop == (V4 if prefix.version == 4 else V6)
        local = {i.name for i in snapshot.instances if i.location == "h1" and i.running}
        hops = {h.address for h in host_routes[prefix].next_hops}
        backends = {b.id.instance: b for b in result.backends}
        assert {n for n, b in backends.items() if b.address(prefix.version) in hops} <= local
        health_of_hop = [healths.get(BackendId("dns", "default", n)) for n, b in backends.items()
                         if b.address(prefix.version) in hops]  # fmt: skip
        if config.services[0].on_failure == "withdraw":
            assert all(h is not None and h.healthy for h in health_of_hop)
        if not any(h is not None and h.healthy for h in health_of_hop):
            # none healthy: only degrade announces, and only through backends that were checked
            assert config.services[0].on_failure == "degrade"
            assert all(h is not None and h.checked for h in health_of_hop)
        assert (GRACEFUL_SHUTDOWN in route.attributes.communities) == (drains.since("dns") is not None)


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(0, 4))
def test_a_change_inside_the_fall_window_changes_nothing_for_the_router(scenario: Any, which: int) -> None:
    """up -> falling is a health change the router never sees: the plan is the same."""
    config, snapshot, healths, drains = scenario
    ups = [k for k, h in healths.items() if h.state == "up"]
    if not ups:
        return
    key = ups[which % len(ups)]
    falling = record(healths[key], CheckResult(False, "r", 2), Rules(rise=1, fall=2), 2).health
    assert falling.state == "falling"
    before = plan(config, snapshot, healths, drains=drains)
    after = plan(config, snapshot, {**healths, key: falling}, drains=drains)
    assert (after.routes, after.host_routes) == (before.routes, before.host_routes)


def test_a_service_on_ovn_is_an_lxd_forward_not_a_host_route() -> None:
    ovn = NetworkRecord("default", "ovn0", "ovn", True, FrozenMap({"ipv4.address": "10.1.0.1/24"}))
    snapshot = LXDSnapshot("h1", False, ("default",), (BRIDGE, ovn),
                           (inst("dns-ovn", nic("10.1.0.5/24", network="ovn0"), location="h1"),))  # fmt: skip
    result = plan(fabric(DNS), snapshot, up("dns-ovn"))
    assert [(s.action, s.listen, s.target) for s in result.forward_steps] == [
        ("create", "10.250.0.53", "10.1.0.5")
    ]
    assert (
        result.host_routes == () and result.routes == RoutePlan()
    )  # the route planner announces the forward
    assert [c.id.instance for c in result.checks] == ["dns-ovn"]
    states = {str(a.address): a.state for a in result.addresses}
    assert states == {"10.250.0.53": "withdrawn", "2001:db8:250::53": "withdrawn"}
