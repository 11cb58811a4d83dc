"""LXD records for route planner tests: hypothesis strategies, a large deterministic snapshot, plan checks.

The strategies draw from small pools of names and prefixes so generated objects collide often
(duplicate claims, nesting prefixes, instances on missing networks) and mix in junk values.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from fabric_lab.lxd_builders import (  # re-exported: the plain builders live there
    HOST as HOST,
)
from fabric_lab.lxd_builders import (
    HOST6 as HOST6,
)
from fabric_lab.lxd_builders import (
    ME as ME,
)
from fabric_lab.lxd_builders import (
    MEMBERS as MEMBERS,
)
from fabric_lab.lxd_builders import (
    UPLINK as UPLINK,
)
from fabric_lab.lxd_builders import (
    Config as Config,
)
from fabric_lab.lxd_builders import (
    Record as Record,
)
from fabric_lab.lxd_builders import (
    bridge as bridge,
)
from fabric_lab.lxd_builders import (
    config as config,
)
from fabric_lab.lxd_builders import (
    instance as instance,
)
from fabric_lab.lxd_builders import (
    large_config as large_config,
)
from fabric_lab.lxd_builders import (
    large_snapshot as large_snapshot,
)
from fabric_lab.lxd_builders import (
    nic as nic,
)
from fabric_lab.lxd_builders import (
    ovn as ovn,
)
from fabric_lab.lxd_builders import (
    snapshot as snapshot,
)
from fabric_lab.lxd_builders import (
    uplink as uplink,
)
from fabricd.config import FabricConfig, load_config_text
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import (
    InstanceRecord,
    ListenerRecord,
    LXDSnapshot,
    NetworkRecord,
    NicRecord,
)
from fabricd.routes.model import Refusal, RoutePlan
from fabricd.routes.planner import IncrementalPlanner, plan_routes

# --- planning with both planners ----------------------------------------------------------------

CONFIG = config("routes:\n  allowed_ranges: [10.50.0.0/16]\n")


def planned(snap: LXDSnapshot, cfg: FabricConfig = CONFIG) -> RoutePlan:
    """plan_routes, checked against a fresh IncrementalPlanner and for internal errors."""
    cold = plan_routes(snap, cfg)
    assert IncrementalPlanner(cfg).update(snap) == cold
    assert not [r for r in cold.refused if "could not plan" in r.reason]
    return cold


def announced(plan: RoutePlan) -> dict[str, str]:
    """prefix -> next hop"""
    return {str(r.prefix): str(r.next_hop) for r in plan.routes}


def reasons(refusals: tuple[Refusal, ...]) -> dict[str, list[str]]:
    """prefix -> reasons"""
    found: dict[str, list[str]] = {}
    for refusal in refusals:
        found.setdefault(refusal.prefix, []).append(refusal.reason)
    return found


# --- hypothesis strategies ------------------------------------------------------------------------

JUNK = (
    "",
    " ",
    "none",
    "auto",
    "junk",
    "10.1.2.300/24",
    "10.0.0.1",
    "\u0661\u0660.0.0.0/8",
    "\x00\n",
    ",,,",
    "fe80::1%eth0/64",
)
# Inside some allowed range (uplink routes, bridge subnets, config ranges), often nesting.
GOOD_V4 = (
    "198.51.100.0/25", "198.51.100.128/25", "198.51.100.64/27", "198.51.100.7/32", "100.64.1.0/24",
    "10.50.0.0/24", "10.50.0.128/25", "10.50.7.0/24", "10.0.3.0/24", "10.0.3.9/32", "10.0.3.128/26",
)  # fmt: skip
GOOD_V6 = ("2001:db8:100:1::/64", "2001:db8:100:1::5/128", "2001:db8:100:2::/64", "2001:db8:200::/64")
OVN_HOSTS = tuple(f"198.51.100.{k}/32" for k in range(1, 255, 7))
BRIDGE_NETS = tuple(f"10.50.{k}.0/24" for k in range(1, 40))
BAD = ("0.0.0.0/0", "0.0.0.0/1", "224.0.0.0/24", "10.50.0.1/24", "10.9.0.0/24", "2001:db8:100::/48", "::/0")
ADDRESSES = (
    "198.51.100.7",
    "198.51.100.130",
    "203.0.113.3",
    "10.50.0.9",
    "10.0.3.9",
    "2001:db8:100:1::5",
    "junk",
    "",
)


def _listing(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A comma-separated list, mostly from `pool`, sometimes bad or junk."""
    return st.lists(st.sampled_from(pool * 4 + BAD + JUNK), max_size=4).map(", ".join)


_one = st.sampled_from


def _mostly(good: tuple[str | None, ...], bad: tuple[str | None, ...] = ()) -> st.SearchStrategy[Any]:
    return st.sampled_from(good * 4 + bad)


def _config(
    required: dict[str, st.SearchStrategy[str]], optional: dict[str, st.SearchStrategy[str]] | None = None
) -> st.SearchStrategy[FrozenMap[str]]:
    return st.fixed_dictionaries(required, optional=optional or {}).map(FrozenMap)


_UPLINK_CONFIG = _config(
    {
        "ipv4.routes": _listing(("100.64.0.0/10", "0.0.0.0/0")).map("198.51.100.0/24,{}".format),
        "ipv6.routes": _mostly(("2001:db8:100::/48",), ("", "junk")),
    },
    {
        "ipv4.ovn.ranges": _mostly(("203.0.113.0-203.0.113.15",), ("203.0.113.9-203.0.113.1", "x-y")),
        "bgp.ipv4.nexthop": _mostly(("192.0.2.99",), ("2001:db8::99", "junk", "127.0.0.1", "")),
        "bgp.ipv6.nexthop": _mostly(("2001:db8::99",), ("192.0.2.99", "")),
    },
)
_OVN_CONFIG = _config(
    {
        "network": _mostly((UPLINK,), ("missing", "")),
        "ipv4.address": _mostly(
            ("198.51.100.1/25", "198.51.100.129/25", "10.50.0.1/24"), ("none", "auto", "0.0.0.1/0", "junk")
        ),
        "volatile.network.ipv4.address": _mostly(("203.0.113.5", "203.0.113.6"), ("junk", "")),
    },
    {
        "ipv6.address": _mostly(("2001:db8:100:1::1/64", "2001:db8:200::1/64"), ("none",)),
        "ipv4.nat": _mostly(("false",), ("true", "")),
        "ipv6.nat": _mostly(("false",), ("true",)),
        "volatile.network.ipv6.address": _mostly(("2001:db8:ff::5",), ("",)),
        "user.fabric.med": _mostly(("10",), ("x", "none")),
        "user.fabric.communities": _mostly(("65000:1", "65000:1 65000:2"), ("99999:1",)),
    },
)
_BRIDGE_CONFIG = _config(
    {"ipv4.address": _mostly(("10.0.3.1/24", "10.50.0.1/25"), ("junk", "none"))},
    {
        "ipv6.address": _mostly(("2001:db8:200::1/64",), ("none",)),
        "user.fabric.announce-addresses": _mostly(("true", "false"), ("maybe",)),
        "user.fabric.large-communities": _mostly(("65000:1:2",), ("1:2",)),
    },
)


def _nic_config(
    names: tuple[str, ...], v4: tuple[str, ...], v6: tuple[str, ...]
) -> st.SearchStrategy[FrozenMap[str]]:
    routes = {"ipv4.routes.external": _listing(v4), "ipv6.routes.external": _listing(v6)}
    return _config({"network": _one(names)}, routes)


# NICs mostly ask for prefixes their kind of network may carry, so plans have instance routes.
_NIC_CONFIG = st.one_of(
    _nic_config(("ovn1", "ovn2"), GOOD_V4[:5] + OVN_HOSTS, GOOD_V6[:3]),
    _nic_config(("br0", "br1"), GOOD_V4[5:] + BRIDGE_NETS, GOOD_V6[3:]),
    _nic_config(("ovn1", "ovn3", "br0", "mac0", "gone", ""), GOOD_V4, GOOD_V6),
)
_NIC_ADDRESSES = st.lists(
    _mostly(("10.0.3.9/24", "10.50.0.9/25", "2001:db8:200::9/64"), ("10.0.3.1", "fe80::1/64", "junk")),
    max_size=3,
)
_INSTANCE_CONFIG = _config({}, {"user.fabric.routes": _listing(GOOD_V4[5:] + GOOD_V6[3:])})


@st.composite
def networks(draw: st.DrawFn) -> tuple[NetworkRecord, ...]:
    found = [NetworkRecord("default", UPLINK, draw(_one(("physical", "bridge"))), True, draw(_UPLINK_CONFIG))]
    for name in ("ovn1", *draw(st.lists(_one(("ovn2", "ovn3")), unique=True))):
        chassis = draw(_mostly(("m1", "m2", "host-m1"), (None,)))
        project = draw(_mostly(("default",), ("p2",)))
        found.append(NetworkRecord(project, name, "ovn", True, draw(_OVN_CONFIG), chassis))
    for name in ("br0", *draw(st.lists(_one(("br1", "mac0")), unique=True))):
        kind = "macvlan" if name == "mac0" else "bridge"
        managed = draw(st.booleans()) or kind == "bridge"
        found.append(NetworkRecord("default", name, kind, managed, draw(_BRIDGE_CONFIG)))
    return tuple(found)


_NICS = st.builds(
    lambda device, config, addresses: NicRecord(device, config, addresses=tuple(addresses)),
    _one(("eth0", "eth1")),
    _NIC_CONFIG,
    _NIC_ADDRESSES,
)


def instances(clustered: bool) -> st.SearchStrategy[InstanceRecord]:
    return st.builds(
        InstanceRecord,
        _mostly(("default",), ("p2",)),
        _one(("c1", "c2", "c3", "c4", "c5")),
        st.just("container"),
        _mostly(("Running",), ("Stopped", "Frozen")),
        _mostly(("m1", "m1", "m2")) if clustered else st.just("none"),
        st.lists(_NICS, max_size=2).map(tuple),
        _INSTANCE_CONFIG,
    )


def _listener_fields(clustered: bool) -> st.SearchStrategy[tuple[str, str, str, str]]:
    return st.tuples(
        _mostly(("default",), ("p2",)),
        _mostly(("ovn1", "ovn2", "br0"), ("gone",)),
        _one(ADDRESSES),
        _mostly(("", "m1", "m2")) if clustered else st.just(""),
    )


def forwards(clustered: bool) -> st.SearchStrategy[ListenerRecord]:
    return _listener_fields(clustered).map(lambda f: ListenerRecord("forward", *f))


def load_balancers(clustered: bool) -> st.SearchStrategy[ListenerRecord]:
    return _listener_fields(clustered).map(lambda f: ListenerRecord("load-balancer", *f))


@st.composite
def snapshots(draw: st.DrawFn, clustered: bool | None = None) -> LXDSnapshot:
    if clustered is None:
        clustered = draw(st.booleans())
    return LXDSnapshot(
        ME if clustered else "none",
        clustered,
        ("default", "p2"),
        draw(networks()),
        tuple(draw(st.lists(instances(clustered), max_size=6))),
        tuple(draw(st.lists(forwards(clustered), max_size=3))),
        tuple(draw(st.lists(load_balancers(clustered), max_size=2))),
    )


@st.composite
def configs(draw: st.DrawFn) -> FabricConfig:
    ranges = draw(st.lists(_mostly(("10.50.0.0/16", "2001:db8:200::/48"), ("10.9.0.0/24",)), unique=True))
    lines = [
        "routes:",
        f"  allowed_ranges: [{', '.join(ranges)}]",
        f"  announce_instance_addresses: {draw(st.sampled_from(('true', 'false')))}",
        f"  max_prefixes: {draw(_mostly(('100000',), ('2', '5')))}",
        f"  ovn_default_mode: {draw(st.sampled_from(('all-members', 'active-chassis')))}",
        "  communities: ['65000:9']",
        "lxd:",
        "  chassis_members: [{chassis: host-m1, member: m1}]",
    ]
    host = draw(st.sampled_from((HOST, HOST6)))
    return load_config_text(host + "\n".join(lines) + "\n", "test.yaml")


# --- instances on the overlay bridge (DHCP/DNS planning) ---------------------------------------------

OVERLAY = "fabric0"
# Small pools so names, MACs and addresses collide; each pool mixes in hostile values.
OVERLAY_NAMES = ("c1", "c2", "web", "C1", "db-1")
HOSTILE_NAMES = ("bad_name", "c1\ndhcp-range=x", "1234", "-x", "a" * 64, "c 1", "c1,10.0.0.1", "")
OVERLAY_MACS = (*(f"02:00:00:00:00:0{i}" for i in range(1, 6)), "02-00-00-00-00-01", "02:00:00:00:00:0A")
HOSTILE_MACS = (
    None, "", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "02:00:00:00:00:07\nx", "zz", "01:00:5e:00:00:01",
)  # fmt: skip
OVERLAY_ADDRESSES = (
    "10.200.0.5/24", "10.200.0.6/24", "10.200.0.7/24", "10.200.0.150/24", "fd00:200::5/64",
    "2001:db8:9::6/64",
)  # fmt: skip
HOSTILE_ADDRESSES = (
    "10.200.0.1/24", "10.200.0.255/24", "10.9.0.1/24", "fe80::1/64", "ff02::1/64", "junk",
    "10.200.0.8/24\nx", "",
)  # fmt: skip

_OVERLAY_NIC_CONFIG = _mostly(
    (FrozenMap({"network": OVERLAY}), FrozenMap({"nictype": "bridged", "parent": OVERLAY})),
    (FrozenMap({"network": "br0"}), FrozenMap({"nictype": "macvlan", "parent": OVERLAY})),
)
_OVERLAY_NICS = st.builds(
    lambda device, config, hwaddr, addresses: NicRecord(device, config, hwaddr, addresses=tuple(addresses)),
    _mostly(("eth0", "eth1"), ("eth2",)),
    _OVERLAY_NIC_CONFIG,
    _mostly(OVERLAY_MACS, HOSTILE_MACS),
    st.lists(_mostly(OVERLAY_ADDRESSES, HOSTILE_ADDRESSES), max_size=3),
)


def overlay_instances(clustered: bool = True) -> st.SearchStrategy[InstanceRecord]:
    """Instances with NICs mostly on the overlay bridge `fabric0`, hostile values mixed in."""
    return st.builds(
        InstanceRecord,
        _mostly(("default",), ("p2", "P2", "bad_proj")),
        _mostly(OVERLAY_NAMES, HOSTILE_NAMES),
        st.just("container"),
        _mostly(("Running",), ("Stopped",)),
        _mostly(("m1", "m2"), ("M1", "bad loc")) if clustered else st.just("none"),
        st.lists(_OVERLAY_NICS, min_size=1, max_size=2).map(tuple),
    )
