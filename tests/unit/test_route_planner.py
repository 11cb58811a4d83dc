"""The route planner's rules: what is announced, with which next hop, and by which member.

Every case runs through both planners (`planned` checks IncrementalPlanner against plan_routes).
Timing check, not a test: `.venv/bin/python -m tests.unit.test_route_planner`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from ipaddress import ip_address, ip_network

from fabricd.bgp.paths import SessionPath, SessionPaths
from fabricd.config.model import FabricConfig
from fabricd.lxd.records import ListenerRecord, LXDSnapshot
from fabricd.routes.model import Origin, RouteAttributes, RoutePlan
from fabricd.routes.planner import IncrementalPlanner, plan_routes
from tests.unit.lxd_strategies import (
    CONFIG,
    HOST,
    announced,
    bridge,
    config,
    instance,
    large_config,
    large_snapshot,
    nic,
    ovn,
    planned,
    reasons,
    snapshot,
    uplink,
)

UNDERLAY4, UNDERLAY6 = "192.0.2.11", "2001:db8::11"
OVN_HOP4, OVN_HOP6 = "203.0.113.11", "2001:db8:ff::11"
ACTIVE_CHASSIS = "routes:\n  ovn_default_mode: active-chassis\n"
RANGES = "routes:\n  allowed_ranges: [10.50.0.0/16]\n"


# --- rule 1: OVN subnets -------------------------------------------------------------------------


def test_ovn_subnets_are_announced_via_the_router_address_on_the_uplink() -> None:
    plan = planned(snapshot(uplink(), ovn()))
    assert announced(plan) == {"198.51.100.0/26": OVN_HOP4, "2001:db8:100:1::/64": OVN_HOP6}
    origins = {r.origin for r in plan.routes}
    assert Origin("ovn-subnet", "default", "net1", "", "ipv4.address") in origins
    assert plan.refused == ()
    assert plan.withheld == ()


def test_the_uplinks_bgp_nexthop_overrides_the_router_address() -> None:
    up = uplink({"bgp.ipv4.nexthop": "203.0.113.1", "bgp.ipv6.nexthop": "2001:db8:ff::1"})
    plan = planned(snapshot(up, ovn()))
    assert announced(plan) == {"198.51.100.0/26": "203.0.113.1", "2001:db8:100:1::/64": "2001:db8:ff::1"}


def test_nat_withholds_only_its_family() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.nat": "true"})))
    assert announced(plan) == {"2001:db8:100:1::/64": OVN_HOP6}
    assert reasons(plan.withheld) == {"198.51.100.0/26": ["ipv4.nat is on"]}


def test_nat_unset_or_false_announces() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.nat": None, "ipv6.nat": "false"})))
    assert set(announced(plan)) == {"198.51.100.0/26", "2001:db8:100:1::/64"}


def test_a_network_without_a_router_address_yet_is_refused() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"volatile.network.ipv4.address": None})))
    assert reasons(plan.refused) == {
        "198.51.100.0/26": ["no uplink address yet (volatile.network.ipv4.address unset)"]
    }
    assert announced(plan) == {"2001:db8:100:1::/64": OVN_HOP6}


def test_unset_or_none_addresses_announce_nothing() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.address": "none", "ipv6.address": None})))
    assert plan.routes == ()
    assert plan.refused == ()
    assert plan.withheld == ()


def test_a_missing_uplink_refuses_the_network() -> None:
    plan = planned(
        snapshot(ovn(config={"network": "gone"})), config("routes:\n  allowed_ranges: [198.51.100.0/24]\n")
    )
    assert plan.routes == ()
    assert reasons(plan.refused)["198.51.100.0/26"] == ["uplink gone not found in project default"]


def test_the_uplink_is_found_in_the_default_project() -> None:
    plan = planned(snapshot(uplink(), ovn(project="tenant")))
    assert {r.origin.project for r in plan.routes} == {"tenant"}


# --- rule 2: NIC external routes -----------------------------------------------------------------


def test_external_routes_on_an_ovn_nic_use_the_ovn_next_hop() -> None:
    routes = {"ipv4.routes.external": "198.51.100.128/28", "ipv6.routes.external": "2001:db8:100:2::/64"}
    plan = planned(snapshot(uplink(), ovn(), instance("c1", nic("net1", routes))))
    assert announced(plan)["198.51.100.128/28"] == OVN_HOP4
    assert announced(plan)["2001:db8:100:2::/64"] == OVN_HOP6
    origin = next(r.origin for r in plan.routes if str(r.prefix) == "198.51.100.128/28")
    assert origin == Origin("nic-external-route", "default", "net1", "c1", "eth0/ipv4.routes.external")


def test_external_routes_on_a_bridge_nic_use_the_underlay() -> None:
    routes = {"ipv4.routes.external": "10.50.1.0/24", "ipv6.routes.external": "2001:db8:300::/64"}
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", routes))))
    assert announced(plan) == {"10.50.1.0/24": UNDERLAY4, "2001:db8:300::/64": UNDERLAY6}


def test_ipv6_without_an_ipv6_underlay_is_refused() -> None:
    routes = {"ipv4.routes.external": "10.50.1.0/24", "ipv6.routes.external": "2001:db8:300::/64"}
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", routes))), config(RANGES, host=HOST))
    assert announced(plan) == {"10.50.1.0/24": UNDERLAY4}
    assert reasons(plan.refused) == {"2001:db8:300::/64": ["no IPv6 next hop: set host.underlay_address6"]}


def test_an_ipv6_only_underlay_carries_ipv6_and_refuses_ipv4() -> None:
    host = "host:\n  name: m1\n  underlay_address: 2001:db8::11\n"
    routes = {"ipv4.routes.external": "10.50.1.0/24", "ipv6.routes.external": "2001:db8:300::/64"}
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", routes))), config(RANGES, host=host))
    assert announced(plan) == {"2001:db8:300::/64": UNDERLAY6}
    assert reasons(plan.refused) == {"10.50.1.0/24": ["no IPv4 next hop: host.underlay_address is IPv6"]}


def test_external_routes_on_other_network_types_are_refused() -> None:
    mac = replace(bridge("mac0"), type="macvlan")
    plan = planned(snapshot(mac, instance("c1", nic("mac0", {"ipv4.routes.external": "10.50.1.0/24"}))))
    assert "only ovn and bridge networks announce routes" in reasons(plan.refused)["10.50.1.0/24"][0]


def test_external_routes_on_a_missing_network_are_refused() -> None:
    plan = planned(snapshot(instance("c1", nic("gone", {"ipv4.routes.external": "10.50.1.0/24"}))))
    assert reasons(plan.refused) == {"10.50.1.0/24": ["network gone not found"]}


def test_old_style_bridged_nics_name_their_bridge_as_parent() -> None:
    old_style = nic("", {"network": None, "nictype": "bridged", "parent": "br0"}, addresses=("10.0.3.9/24",))
    plan = planned(
        snapshot(bridge(), instance("c1", old_style)),
        config("routes:\n  announce_instance_addresses: true\n"),
    )
    assert announced(plan) == {"10.0.3.9/32": UNDERLAY4}


# --- rule 3: forwards and load balancers ---------------------------------------------------------


def test_forwards_and_load_balancers_on_ovn_use_the_ovn_next_hop() -> None:
    records = (ListenerRecord("forward", "default", "net1", "198.51.100.200", ""),
               ListenerRecord("load-balancer", "default", "net1", "2001:db8:100:9::1", ""))  # fmt: skip
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.address": "none", "ipv6.address": "none"}), *records))
    assert announced(plan) == {"198.51.100.200/32": OVN_HOP4, "2001:db8:100:9::1/128": OVN_HOP6}
    assert {r.origin.kind for r in plan.routes} == {"forward", "load-balancer"}
    assert Origin("forward", "default", "net1", "", "198.51.100.200") in {r.origin for r in plan.routes}


def test_forwards_on_a_bridge_use_the_underlay() -> None:
    plan = planned(snapshot(bridge(), ListenerRecord("forward", "default", "br0", "10.50.0.7", "")))
    assert announced(plan) == {"10.50.0.7/32": UNDERLAY4}


def test_a_located_forward_belongs_to_its_member() -> None:
    mine = ListenerRecord("forward", "default", "br0", "10.50.0.7", "m1")
    theirs = ListenerRecord("forward", "default", "br0", "10.50.0.8", "m2")
    balancer = ListenerRecord("load-balancer", "default", "br0", "10.50.0.9", "m2")
    plan = planned(snapshot(bridge(), mine, theirs, balancer))
    assert announced(plan) == {"10.50.0.7/32": UNDERLAY4}
    assert reasons(plan.withheld) == {
        "10.50.0.8/32": ["forward belongs to member m2"],
        "10.50.0.9/32": ["load balancer belongs to member m2"],
    }


def test_the_same_forward_address_on_two_members_is_one_owner() -> None:
    both = (
        ListenerRecord("forward", "default", "br0", "10.50.0.7", "m1"),
        ListenerRecord("forward", "default", "br0", "10.50.0.7", "m2"),
    )
    plan = planned(snapshot(bridge(), *both))
    assert announced(plan) == {"10.50.0.7/32": UNDERLAY4}
    assert plan.refused == ()


def test_a_junk_listen_address_is_refused() -> None:
    plan = planned(snapshot(bridge(), ListenerRecord("forward", "default", "br0", "10.50.0.300", "")))
    assert reasons(plan.refused) == {"10.50.0.300": ["'10.50.0.300' is not an address"]}


# --- rule 4: instance addresses ------------------------------------------------------------------

ADDRESSES = ("10.0.3.9/24", "2001:db8:300::9/64", "fe80::9/64", "10.77.0.1/24")


def test_instance_addresses_are_off_by_default() -> None:
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", addresses=ADDRESSES))))
    assert plan.routes == ()
    assert plan.refused == ()


def test_instance_addresses_inside_the_bridge_subnet_when_enabled() -> None:
    cfg = config("routes:\n  announce_instance_addresses: true\n")
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", addresses=ADDRESSES))), cfg)
    assert announced(plan) == {"10.0.3.9/32": UNDERLAY4, "2001:db8:300::9/128": UNDERLAY6}
    assert reasons(plan.refused) == {"10.77.0.1/32": ["10.77.0.1 is outside the subnet of bridge br0"]}
    assert {r.origin.kind for r in plan.routes} == {"instance-address"}


def test_the_bridge_can_opt_in_and_out() -> None:
    on = bridge("br0", {"user.fabric.announce-addresses": "true"})
    off = bridge("br1", {"user.fabric.announce-addresses": "false", "ipv4.address": "10.0.4.1/24"})
    snap = snapshot(on, off, instance("c1", nic("br0", addresses=("10.0.3.9/24",))),
                    instance("c2", nic("br1", addresses=("10.0.4.9/24",))))  # fmt: skip
    assert announced(planned(snap)) == {"10.0.3.9/32": UNDERLAY4}
    assert announced(planned(snap, config("routes:\n  announce_instance_addresses: true\n"))) == {
        "10.0.3.9/32": UNDERLAY4
    }


# --- rule 5: user.fabric.routes ------------------------------------------------------------------


def test_user_routes_go_via_the_underlay() -> None:
    c1 = instance("c1", nic("br0"), config={"user.fabric.routes": "10.50.8.0/24, 2001:db8:300::/80"})
    plan = planned(snapshot(bridge(), c1))
    assert announced(plan) == {"10.50.8.0/24": UNDERLAY4, "2001:db8:300::/80": UNDERLAY6}
    assert {r.origin for r in plan.routes} == {
        Origin("user-route", "default", "br0", "c1", "user.fabric.routes"),
    }


def test_user_routes_need_a_bridge_nic() -> None:
    c1 = instance("c1", nic("net1"), config={"user.fabric.routes": "10.50.8.0/24"})
    plan = planned(snapshot(uplink(), ovn(), c1))
    assert reasons(plan.refused)["10.50.8.0/24"] == ["user.fabric.routes needs a NIC on a bridge network"]


def test_user_routes_pick_the_bridge_whose_ranges_allow_them() -> None:
    nics = (nic("br0", device="eth0"), nic("br1", device="eth1"))
    c1 = instance("c1", *nics, config={"user.fabric.routes": "10.0.4.128/25"})
    plan = planned(snapshot(bridge(), bridge("br1", {"ipv4.address": "10.0.4.1/24"}), c1))
    assert [r.origin.network for r in plan.routes] == ["br1"]


# --- locality ------------------------------------------------------------------------------------

EXTERNAL = {"ipv4.routes.external": "10.50.1.0/24"}


def test_only_running_local_instances_announce() -> None:
    snap = snapshot(
        bridge(),
        instance("c1", nic("br0", EXTERNAL)),
        instance("c2", nic("br0", {"ipv4.routes.external": "10.50.2.0/24"}), status="Stopped"),
        instance("c3", nic("br0", {"ipv4.routes.external": "10.50.3.0/24"}), location="m2"),
    )
    plan = planned(snap)
    assert announced(plan) == {"10.50.1.0/24": UNDERLAY4}
    assert reasons(plan.withheld) == {
        "10.50.2.0/24": ["instance is Stopped"],
        "10.50.3.0/24": ["instance runs on member m2"],
    }


def test_a_standalone_server_announces_its_instances() -> None:
    snap = snapshot(
        bridge(), instance("c1", nic("br0", EXTERNAL), location="none"), member="none", clustered=False
    )
    assert announced(planned(snap)) == {"10.50.1.0/24": UNDERLAY4}


def test_standalone_ignores_the_ovn_mode() -> None:
    snap = snapshot(uplink(), ovn(chassis=None), member="none", clustered=False)
    assert set(announced(planned(snap, config(ACTIVE_CHASSIS)))) == {"198.51.100.0/26", "2001:db8:100:1::/64"}


def test_all_members_mode_announces_ovn_networks_everywhere() -> None:
    plan = planned(snapshot(uplink(), ovn(chassis="m2")))
    assert set(announced(plan)) == {"198.51.100.0/26", "2001:db8:100:1::/64"}


def test_active_chassis_mode_announces_only_on_the_chassis_member() -> None:
    cfg = config(ACTIVE_CHASSIS)
    assert len(planned(snapshot(uplink(), ovn(chassis="m1")), cfg).routes) == 2
    elsewhere = planned(snapshot(uplink(), ovn(chassis="m2")), cfg)
    assert elsewhere.routes == ()
    assert set(reasons(elsewhere.withheld)["198.51.100.0/26"]) == {"active chassis is on member m2"}
    unknown = planned(snapshot(uplink(), ovn(chassis=None)), cfg)
    assert set(reasons(unknown.withheld)["198.51.100.0/26"]) == {"active chassis unknown"}


def test_chassis_hostnames_map_to_members() -> None:
    cfg = config(ACTIVE_CHASSIS + "lxd:\n  chassis_members: [{chassis: host-a.example, member: m1}]\n")
    assert len(planned(snapshot(uplink(), ovn(chassis="host-a.example")), cfg).routes) == 2


def test_the_mode_can_be_set_per_uplink() -> None:
    body = (
        "routes:\n  ovn_default_mode: all-members\n  ovn_uplinks: [{uplink: UPLINK, mode: active-chassis}]\n"
    )
    assert planned(snapshot(uplink(), ovn(chassis="m2")), config(body)).routes == ()


def test_ovn_nic_routes_follow_the_instance_and_the_chassis() -> None:
    routes = {"ipv4.routes.external": "198.51.100.128/28"}
    cfg = config(ACTIVE_CHASSIS)
    here = planned(snapshot(uplink(), ovn(chassis="m1"), instance("c1", nic("net1", routes))), cfg)
    assert "198.51.100.128/28" in announced(here)
    gateway_elsewhere = planned(
        snapshot(uplink(), ovn(chassis="m2"), instance("c1", nic("net1", routes))), cfg
    )
    assert reasons(gateway_elsewhere.withheld)["198.51.100.128/28"] == ["active chassis is on member m2"]
    instance_elsewhere = planned(
        snapshot(uplink(), ovn(), instance("c1", nic("net1", routes), location="m2")), cfg
    )
    assert reasons(instance_elsewhere.withheld)["198.51.100.128/28"] == ["instance runs on member m2"]


# --- attributes ----------------------------------------------------------------------------------


def test_network_keys_replace_config_defaults_key_by_key() -> None:
    cfg = config("routes:\n  communities: ['65000:1']\n  med: 5\n  local_pref: 200\n")
    keys = {"user.fabric.communities": "65000:7 65000:8", "user.fabric.med": "none",
            "user.fabric.large-communities": "65000:1:2"}  # fmt: skip
    plan = planned(snapshot(uplink(), ovn(config=keys)), cfg)
    assert {r.attributes for r in plan.routes} == {
        RouteAttributes(("65000:7", "65000:8"), ("65000:1:2",), None, 200)
    }


def test_routes_carry_the_config_defaults() -> None:
    cfg = config("routes:\n  allowed_ranges: [10.50.0.0/16]\n  large_communities: ['1:2:3']\n  med: 5\n")
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", EXTERNAL))), cfg)
    assert plan.routes[0].attributes == RouteAttributes((), ("1:2:3",), 5, None)


def test_a_bad_attribute_refuses_only_its_network() -> None:
    bad = ovn("net1", {"user.fabric.med": "lots"})
    good = ovn("net2", {"ipv4.address": "198.51.100.65/26", "ipv6.address": "none"})
    plan = planned(snapshot(uplink(), bad, good))
    assert announced(plan) == {"198.51.100.64/26": OVN_HOP4}
    assert reasons(plan.refused)["198.51.100.0/26"] == [
        "user.fabric.med: 'lots' is not an integer 0..4294967295"
    ]


# --- output --------------------------------------------------------------------------------------


def test_outputs_are_sorted_ipv4_first() -> None:
    routes = {
        "ipv4.routes.external": "10.50.9.0/24,10.50.1.0/24",
        "ipv6.routes.external": "2001:db8:300::/64",
    }
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", routes))))
    assert [str(r.prefix) for r in plan.routes] == ["10.50.1.0/24", "10.50.9.0/24", "2001:db8:300::/64"]


def test_the_incremental_planner_follows_changes() -> None:
    planner = IncrementalPlanner(config(RANGES))
    c1 = instance("c1", nic("br0", EXTERNAL))
    first = snapshot(bridge(), c1)
    assert announced(planner.update(first)) == {"10.50.1.0/24": UNDERLAY4}
    stopped = replace(first, instances=(replace(c1, status="Stopped"),))
    assert planner.update(stopped).routes == ()
    moved = replace(first, networks=(bridge(config={"user.fabric.med": "9"}),))
    assert planner.update(moved).routes[0].attributes.med == 9
    assert planner.update(moved) is planner.update(moved)


def timing_check() -> None:
    """Cold plan and one-instance updates at 10,000 instances / 50,000 routes."""
    snap, cfg = large_snapshot(), large_config()
    started = time.process_time()
    plan = plan_routes(snap, cfg)
    print(f"cold plan_routes: {time.process_time() - started:.2f} s CPU, {len(plan.routes)} routes")
    planner = IncrementalPlanner(cfg)
    started = time.process_time()
    planner.update(snap)
    print(f"first IncrementalPlanner.update: {time.process_time() - started:.2f} s CPU")
    instances = list(snap.instances)
    took = []
    for n in range(200):
        i = n * 137 % len(instances)
        instances[i] = replace(instances[i], status="Stopped" if instances[i].running else "Running")
        snap = replace(snap, instances=tuple(instances))
        started = time.process_time()
        planner.update(snap)
        took.append(time.process_time() - started)
    took.sort()
    print(f"one instance changed: median {took[100] * 1000:.2f} ms, p90 {took[180] * 1000:.2f} ms CPU")
    assert planner.update(snap) == plan_routes(snap, cfg)


if __name__ == "__main__":
    timing_check()


# --- next hops the peer can use (the sessions' paths) ---------------------------------------------

PEER4 = SessionPath(
    "r1", ip_address("192.0.2.1"), "eth1", ip_address(UNDERLAY4), (ip_network("192.0.2.0/24"),)
)
PEER6 = SessionPath(
    "r1-v6", ip_address("2001:db8::1"), "eth1", ip_address(UNDERLAY6), (ip_network("2001:db8::/64"),)
)
LOCAL_UPLINK = SessionPaths((PEER4, PEER6))  # the sessions leave by eth1; the uplink is elsewhere


def planned_with(snap: LXDSnapshot, paths: SessionPaths, cfg: FabricConfig = CONFIG) -> RoutePlan:
    cold = plan_routes(snap, cfg, paths)
    assert IncrementalPlanner(cfg).update(snap, paths) == cold
    return cold


def test_an_ovn_router_address_the_peer_cannot_reach_becomes_next_hop_self() -> None:
    plan = planned_with(snapshot(uplink(kind="bridge"), ovn()), LOCAL_UPLINK)
    assert announced(plan) == {"198.51.100.0/26": UNDERLAY4, "2001:db8:100:1::/64": UNDERLAY6}
    notes = {str(r.prefix): r.note for r in plan.routes}
    note = notes["198.51.100.0/26"]
    assert note.startswith(f"next-hop self: OVN router address {OVN_HOP4} is on host-local")
    assert "r1 leaves by eth1" in notes["198.51.100.0/26"]


def test_an_ovn_router_address_on_the_sessions_subnet_is_kept() -> None:
    shared = SessionPaths(
        (
            replace(PEER4, connected=(ip_network("203.0.113.0/24"),)),
            replace(PEER6, connected=(ip_network("2001:db8:ff::/64"),)),
        )
    )
    plan = planned_with(snapshot(uplink(kind="bridge"), ovn()), shared)
    assert announced(plan) == {"198.51.100.0/26": OVN_HOP4, "2001:db8:100:1::/64": OVN_HOP6}
    assert {r.note for r in plan.routes} == {""}


def test_an_uplink_can_withhold_instead_naming_the_nexthop_key() -> None:
    cfg = config(RANGES + "  ovn_uplinks: [{uplink: UPLINK, unusable_next_hop: withhold}]\n")
    plan = planned_with(snapshot(uplink(kind="bridge"), ovn()), LOCAL_UPLINK, cfg)
    assert plan.routes == ()
    found = reasons(plan.withheld)
    assert "set bgp.ipv4.nexthop on uplink UPLINK" in found["198.51.100.0/26"][0]
    assert "set bgp.ipv6.nexthop on uplink UPLINK" in found["2001:db8:100:1::/64"][0]


def test_the_uplinks_bgp_nexthop_still_wins_unchecked() -> None:
    up = uplink({"bgp.ipv4.nexthop": "203.0.113.1", "bgp.ipv6.nexthop": "2001:db8:ff::1"}, kind="bridge")
    plan = planned_with(snapshot(up, ovn()), LOCAL_UPLINK)
    assert announced(plan) == {"198.51.100.0/26": "203.0.113.1", "2001:db8:100:1::/64": "2001:db8:ff::1"}


def test_only_peers_of_the_family_and_with_a_known_path_count() -> None:
    unknown6 = replace(PEER6, interface=None, local=None, connected=(), error="no route to 2001:db8::1")
    plan = planned_with(snapshot(uplink(kind="bridge"), ovn()), SessionPaths((PEER4, unknown6)))
    assert announced(plan) == {"198.51.100.0/26": UNDERLAY4, "2001:db8:100:1::/64": OVN_HOP6}


def test_bridge_routes_are_not_rewritten() -> None:
    snap = snapshot(bridge(), instance("web", nic("br0", {"ipv4.routes.external": "10.50.1.0/24"})))
    plan = planned_with(snap, LOCAL_UPLINK)
    assert announced(plan) == {"10.50.1.0/24": UNDERLAY4}


def test_a_bridges_own_routes_are_allowed_space_for_routes_on_it() -> None:
    br = bridge(config={"ipv4.routes": "10.60.0.0/24", "ipv6.routes": "2001:db8:60::/48"})
    nic_routes = {"ipv4.routes.external": "10.60.0.0/25", "ipv6.routes.external": "2001:db8:60:1::/64"}
    plan = planned(snapshot(br, instance("c1", nic("br0", nic_routes))), config())
    assert announced(plan) == {"10.60.0.0/25": UNDERLAY4, "2001:db8:60:1::/64": UNDERLAY6}
    outside = planned(
        snapshot(bridge(), instance("c1", nic("br0", {"ipv4.routes.external": "10.60.0.0/25"}))), config()
    )
    assert announced(outside) == {} and "10.60.0.0/25" in reasons(outside.refused)


def test_an_uplink_that_reaches_beyond_this_host_keeps_the_router_address() -> None:
    # A physical uplink, or a bridge with a port to a wider segment: the router may sit on it.
    for up in (uplink(kind="physical"), uplink({"bridge.external_interfaces": "eth2"}, kind="bridge")):
        plan = planned_with(snapshot(up, ovn()), LOCAL_UPLINK)
        assert announced(plan) == {"198.51.100.0/26": OVN_HOP4, "2001:db8:100:1::/64": OVN_HOP6}
