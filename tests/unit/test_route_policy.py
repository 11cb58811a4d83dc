"""Route policy: what is refused and why, including what hostile or broken LXD data asks for."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest

from fabricd.config.model import RoutesConfig
from fabricd.lxd.records import InstanceRecord, ListenerRecord
from fabricd.routes import objects
from fabricd.routes.attributes import network_attributes
from fabricd.routes.model import RouteAttributes
from fabricd.routes.planner import plan_routes
from fabricd.routes.policy import MAX_ENTRIES_PER_KEY, Ranges, parse_prefix, span, split_list
from tests.unit.lxd_strategies import (
    announced,
    bridge,
    config,
    instance,
    nic,
    ovn,
    planned,
    reasons,
    snapshot,
    uplink,
)

RANGES = "routes:\n  allowed_ranges: [10.50.0.0/16]\n"


def external(prefixes: str, network: str = "br0", name: str = "c1", **kwargs: Any) -> InstanceRecord:
    return instance(name, nic(network, {"ipv4.routes.external": prefixes}), **kwargs)


def refused_for(prefixes: str, network: str = "br0", body: str = RANGES) -> dict[str, list[str]]:
    records = (uplink(), ovn(), bridge())
    plan = planned(snapshot(*records, external(prefixes, network)), config(body))
    return {p: r for p, r in reasons(plan.refused).items() if p not in ("198.51.100.0/26",)}


# --- reading prefixes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.1.2.300/24", "'10.1.2.300/24' is not a prefix"),
        ("10.50.1.1/24", "10.50.1.1/24 has host bits set"),
        ("10.50.1.0", "'10.50.1.0' is not a prefix"),
        ("10.50.1.0/24/1", "'10.50.1.0/24/1' is not a prefix"),
        ("10.50.1.0/255.255.255.0", "'10.50.1.0/255.255.255.0' is not a prefix"),
        ("auto", "'auto' is not a prefix"),
        ("\u0661\u0660.50.0.0/16", "'\u0661\u0660.50.0.0/16' is not a prefix"),
        ("fe80::1%eth0/64", "'fe80::1%eth0/64' is not a prefix"),
        ("2001:db8::/64", "2001:db8::/64 is not an IPv4 prefix"),
    ],
)
def test_unreadable_prefixes_are_refused(text: str, reason: str) -> None:
    assert parse_prefix(text, 4) == reason


def test_prefixes_are_read_in_network_form() -> None:
    assert parse_prefix("10.50.1.0/24", 4) == IPv4Network("10.50.1.0/24")
    assert parse_prefix("2001:DB8::/32") == IPv6Network("2001:db8::/32")


def test_lists_drop_blanks_and_none() -> None:
    assert split_list(" 10.0.0.0/8 ,, ,10.1.0.0/16,") == ["10.0.0.0/8", "10.1.0.0/16"]
    assert split_list("none") == split_list("  ") == []


def test_ranges_cover_their_union_and_nothing_broader() -> None:
    ranges = Ranges.of([IPv4Network("10.0.0.0/25"), IPv4Network("10.0.0.128/25"), IPv4Network("10.0.2.0/24")])
    assert ranges.covers(*span(IPv4Network("10.0.0.0/24")))
    assert ranges.covers(*span(IPv4Network("10.0.2.128/25")))
    assert not ranges.covers(*span(IPv4Network("10.0.0.0/22")))
    assert not ranges.covers(*span(IPv4Network("10.0.1.0/24")))
    assert not Ranges().covers(*span(IPv4Network("10.0.0.0/24")))


# --- policy in plans -----------------------------------------------------------------------------


def test_the_default_route_is_never_announced() -> None:
    body = "routes:\n  allowed_ranges: [0.0.0.0/0, '::/0']\n"
    body += "  min_prefix_length_v4: 0\n  min_prefix_length_v6: 0\n"
    defaults = {"ipv4.routes.external": "0.0.0.0/0", "ipv6.routes.external": "::/0"}
    plan = planned(snapshot(bridge(), instance("c1", nic("br0", defaults))), config(body))
    assert plan.routes == ()
    assert reasons(plan.refused) == {
        "0.0.0.0/0": ["default route is never announced"],
        "::/0": ["default route is never announced"],
    }


def test_prefix_lengths_are_bounded() -> None:
    body = "routes:\n  allowed_ranges: [10.0.0.0/8]\n  min_prefix_length_v4: 16\n  max_prefix_length_v4: 24\n"
    found = refused_for("10.0.0.0/15, 10.50.1.0/25, 10.50.1.0/24", body=body)
    assert found == {
        "10.0.0.0/15": ["10.0.0.0/15 is shorter than /16 (routes.min_prefix_length_v4)"],
        "10.50.1.0/25": ["10.50.1.0/25 is longer than /24 (routes.max_prefix_length_v4)"],
    }


def test_special_purpose_space_is_refused_whatever_the_ranges() -> None:
    body = "routes:\n  allowed_ranges: [0.0.0.0/1, 128.0.0.0/1]\n"
    found = refused_for("127.0.0.0/8, 224.0.0.0/24, 169.254.0.0/16, 10.50.0.0/16", body=body)
    assert set(found) == {"127.0.0.0/8", "224.0.0.0/24", "169.254.0.0/16"}
    assert all("special-purpose" in r[0] for r in found.values())


def test_routes_outside_the_uplink_ranges_are_refused() -> None:
    assert refused_for("10.9.0.0/24", network="net1") == {
        "10.9.0.0/24": ["10.9.0.0/24 is outside the allowed ranges of uplink UPLINK"]
    }


def test_routes_outside_the_bridge_ranges_are_refused() -> None:
    assert refused_for("10.9.0.0/24") == {
        "10.9.0.0/24": ["10.9.0.0/24 is outside the allowed ranges of bridge br0"]
    }


def test_the_bridge_subnet_is_allowed_for_its_own_routes() -> None:
    plan = planned(snapshot(bridge(), external("10.0.3.128/25")), config())
    assert announced(plan) == {"10.0.3.128/25": "192.0.2.11"}


def test_ovn_ranges_are_summarized_address_ranges() -> None:
    records = (uplink(), ovn(config={"ipv4.address": "none", "ipv6.address": "none"}))
    inside = ListenerRecord("forward", "default", "net1", "203.0.113.12", "")
    outside = ListenerRecord("forward", "default", "net1", "203.0.113.21", "")
    plan = planned(snapshot(*records, inside, outside))
    assert list(announced(plan)) == ["203.0.113.12/32"]
    assert list(reasons(plan.refused)) == ["203.0.113.21/32"]


def test_a_tenant_subnet_covering_the_uplink_ranges_is_refused() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.address": "198.51.0.1/16", "ipv6.address": "none"})))
    assert plan.routes == ()
    assert reasons(plan.refused) == {
        "198.51.0.0/16": ["198.51.0.0/16 is outside the allowed ranges of uplink UPLINK"]
    }


def test_a_tenant_cannot_announce_a_default_route_or_someone_elses_prefix() -> None:
    neighbour = ovn("net2", {"ipv4.address": "198.51.100.65/26", "ipv6.address": "none"})
    hostile = instance(
        "evil", nic("net1", {"ipv4.routes.external": "0.0.0.0/0,198.51.100.64/26,198.51.100.96/27"})
    )
    plan = planned(snapshot(uplink(), ovn(), neighbour, hostile))
    assert "198.51.100.64/26" not in announced(plan)
    assert "198.51.100.96/27" not in announced(plan)
    found = reasons(plan.refused)
    assert found["0.0.0.0/0"] == ["default route is never announced"]
    assert sorted(found["198.51.100.64/26"]) == [
        "also claimed by default/net1/evil",
        "also claimed by default/net2",
    ]
    assert found["198.51.100.96/27"] == ["overlaps 198.51.100.64/26 of default/net2"]


def test_duplicate_owners_refuse_every_claim() -> None:
    plan = planned(
        snapshot(bridge(), external("10.50.1.0/24", name="c1"), external("10.50.1.0/24", name="c2"))
    )
    assert plan.routes == ()
    assert sorted(reasons(plan.refused)["10.50.1.0/24"]) == [
        "also claimed by default/br0/c1",
        "also claimed by default/br0/c2",
    ]


def test_duplicates_count_across_members() -> None:
    there = external("10.50.1.0/24", name="c2", location="m2")
    plan = planned(snapshot(bridge(), external("10.50.1.0/24", name="c1"), there))
    assert plan.routes == ()
    assert plan.withheld == ()
    assert len(plan.refused) == 2


def test_a_stopped_copy_does_not_block_the_original() -> None:
    copy = external("10.50.1.0/24", name="c1-copy", status="Stopped")
    plan = planned(snapshot(bridge(), external("10.50.1.0/24", name="c1"), copy))
    assert announced(plan) == {"10.50.1.0/24": "192.0.2.11"}
    assert reasons(plan.withheld) == {"10.50.1.0/24": ["instance is Stopped"]}


def test_one_owner_claiming_twice_is_announced_once() -> None:
    c1 = instance("c1", nic("br0", {"ipv4.routes.external": "10.50.1.0/24, 10.50.1.0/24"}),
                  config={"user.fabric.routes": "10.50.1.0/24"})  # fmt: skip
    plan = planned(snapshot(bridge(), c1))
    assert [str(r.prefix) for r in plan.routes] == ["10.50.1.0/24"]
    assert plan.refused == ()


def test_an_ovn_subnet_and_its_own_nics_routes_inside_it_are_fine() -> None:
    plan = planned(snapshot(uplink(), ovn(), external("198.51.100.16/28", network="net1")))
    assert {"198.51.100.0/26", "198.51.100.16/28"} <= set(announced(plan))


def test_max_prefixes_keeps_the_first_routes_in_order() -> None:
    body = RANGES + "  max_prefixes: 2\n"
    plan = planned(snapshot(bridge(), external("10.50.3.0/24,10.50.1.0/24,10.50.2.0/24")), config(body))
    assert list(announced(plan)) == ["10.50.1.0/24", "10.50.2.0/24"]
    assert reasons(plan.refused) == {"10.50.3.0/24": ["max_prefixes 2 reached"]}


def test_a_wrong_family_next_hop_is_refused() -> None:
    plan = planned(
        snapshot(uplink({"bgp.ipv4.nexthop": "2001:db8::1"}), ovn(config={"ipv6.address": "none"}))
    )
    assert plan.routes == ()
    assert reasons(plan.refused) == {
        "198.51.100.0/26": ["next hop 2001:db8::1 (bgp.ipv4.nexthop of uplink UPLINK) is IPv6, not IPv4"]
    }


def test_an_unusable_next_hop_is_refused() -> None:
    plan = planned(snapshot(uplink(), ovn(config={"volatile.network.ipv4.address": "127.0.0.1"})))
    assert "is not a usable unicast address" in reasons(plan.refused)["198.51.100.0/26"][0]


# --- attributes ----------------------------------------------------------------------------------


def test_attributes_are_read_and_normalized() -> None:
    keys = {"user.fabric.communities": "65000:01, 65000:2 65000:2", "user.fabric.local-pref": "300"}
    read = network_attributes(keys, RoutesConfig(med=4))
    assert read.attributes == RouteAttributes(("65000:1", "65000:2"), (), 4, 300)
    assert read.problem is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("user.fabric.communities", "65536:1"),
        ("user.fabric.communities", "65000"),
        ("user.fabric.large-communities", "1:2"),
        ("user.fabric.med", "-1"),
        ("user.fabric.med", "4294967296"),
        ("user.fabric.local-pref", "9" * 5000),
        ("user.fabric.local-pref", "\u0661"),
        ("user.fabric.announce-addresses", "maybe"),
    ],
)
def test_bad_attributes_name_their_key(key: str, value: str) -> None:
    problem = network_attributes({key: value}, RoutesConfig()).problem
    assert problem is not None and problem.startswith(f"{key}: ")


# --- hostile and broken data ---------------------------------------------------------------------


def test_junk_refuses_only_itself() -> None:
    junk = "10.50.1.0/24, ,junk,\x00, 10.50.2.0/24 ,\u2028,10.50.3.0/24/8"
    plan = planned(snapshot(bridge(), external(junk)))
    assert set(announced(plan)) == {"10.50.1.0/24", "10.50.2.0/24"}
    assert len(plan.refused) == 3


def test_a_huge_list_is_one_refusal() -> None:
    huge = ",".join(f"10.50.{i % 256}.{i // 256}/32" for i in range(MAX_ENTRIES_PER_KEY + 1))
    plan = planned(snapshot(bridge(), external(huge)))
    assert plan.routes == ()
    assert [r.reason for r in plan.refused] == [
        f"eth0/ipv4.routes.external lists {MAX_ENTRIES_PER_KEY + 1} prefixes, more than {MAX_ENTRIES_PER_KEY}"
    ]


def test_networks_listed_twice_differently_are_refused() -> None:
    plan = planned(
        snapshot(bridge(), bridge(config={"ipv4.address": "10.0.9.1/24"}), external("10.50.1.0/24"))
    )
    assert plan.routes == ()
    assert reasons(plan.refused)["10.50.1.0/24"] == ["LXD reported network default/br0 2 times, differently"]


def test_unmanaged_networks_carry_no_routes() -> None:
    unmanaged = bridge().__class__("default", "br0", "bridge", False)
    plan = planned(snapshot(unmanaged, external("10.50.1.0/24")))
    assert reasons(plan.refused) == {"10.50.1.0/24": ["network br0 is not managed"]}


def test_junk_everywhere_never_raises() -> None:
    junk = "\x00\ufffd,none,auto, ,/,::/,1.2.3.4/99,ffff::ffff::/1"
    uplink_keys = ("ipv4.routes", "ipv6.routes", "ipv4.ovn.ranges", "bgp.ipv4.nexthop")
    ovn_keys = (
        "network",
        "ipv4.address",
        "ipv4.nat",
        "volatile.network.ipv4.address",
        "user.fabric.communities",
    )
    nic_keys = ("ipv4.routes.external", "ipv6.routes.external")
    records = (
        uplink(dict.fromkeys(uplink_keys, junk)),
        ovn(config=dict.fromkeys(ovn_keys, junk)),
        bridge(config={"ipv4.address": junk, "user.fabric.announce-addresses": "true"}),
        instance(
            junk,
            nic("br0", dict.fromkeys(nic_keys, junk), addresses=(junk,)),
            status=junk,
            location=junk,
            config={"user.fabric.routes": junk},
        ),
        ListenerRecord("forward", "default", "net1", junk, junk),
    )
    plan = planned(snapshot(*records))
    assert plan.routes == ()


def test_a_planner_bug_on_one_object_refuses_only_that_object(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(objects, "instance_routes", broken)
    plan = plan_routes(snapshot(uplink(), ovn(), external("10.50.1.0/24")), config(RANGES))
    assert set(announced(plan)) == {"198.51.100.0/26", "2001:db8:100:1::/64"}
    assert [r.reason for r in plan.refused] == ["could not plan: ValueError: boom"]
