"""LXD 5.0 JSON into records: realistic objects give exact records, malformed ones a RecordError.

The fixtures follow what LXD 5.0.2 returns for GET /1.0/instances?recursion=2, /1.0/networks?recursion=1,
/1.0/networks/NAME/state, .../forwards?recursion=1, .../load-balancers?recursion=1 and
/1.0/cluster/members?recursion=1 (unused fields trimmed, but kept where they could confuse a parser).
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import pytest

from fabricd.frozen import FrozenMap
from fabricd.lxd.parse import (
    RecordError,
    object_name,
    ovn_chassis_of,
    parse_instance,
    parse_listener,
    parse_member,
    parse_network,
)
from fabricd.lxd.records import (
    STANDALONE,
    InstanceRecord,
    ListenerRecord,
    LXDSnapshot,
    MemberRecord,
    NetworkRecord,
    NicRecord,
)

# --- fixtures: LXD 5.0 objects ------------------------------------------------------------------

C1_HWADDR = "00:16:3e:4a:1c:01"

CONTAINER: dict[str, Any] = {
    "architecture": "x86_64",
    "config": {"image.os": "Debian", "user.fabric.announce": "true"},
    "devices": {},
    "ephemeral": False,
    "profiles": ["default"],
    "stateful": False,
    "description": "",
    "created_at": "2024-01-10T10:00:00.000000Z",
    "expanded_config": {
        "image.architecture": "amd64",
        "image.description": "Debian bookworm amd64",
        "image.os": "Debian",
        "user.fabric.announce": "true",
        "user.fabric.routes": "198.51.100.0/28",
        "volatile.base_image": "5f1b2a9c0e",
        "volatile.eth0.host_name": "veth5a1b2c3d",
        "volatile.eth0.hwaddr": C1_HWADDR,
        "volatile.idmap.base": "0",
        "volatile.last_state.power": "RUNNING",
        "volatile.uuid": "0b8e7a52-1f0e-4b8e-9d3c-6b5a1f2e3d4c",
        "limits.cpu": "2",
    },
    "expanded_devices": {
        "root": {"path": "/", "pool": "default", "type": "disk"},
        "eth0": {"name": "eth0", "network": "br0", "type": "nic", "ipv4.routes.external": "198.51.100.0/28"},
        "data": {"path": "/srv", "source": "/srv/c1", "type": "disk"},
    },
    "name": "c1",
    "status": "Running",
    "status_code": 103,
    "last_used_at": "2024-01-10T10:01:00.000000Z",
    "location": "h1",
    "type": "container",
    "project": "p1",
    "backups": None,
    "snapshots": None,
    "state": {
        "status": "Running",
        "status_code": 103,
        "disk": {},
        "memory": {"usage": 12345678, "usage_peak": 0, "swap_usage": 0, "swap_usage_peak": 0},
        "network": {
            "eth0": {
                "addresses": [
                    {"family": "inet", "address": "10.10.0.5", "netmask": "24", "scope": "global"},
                    {"family": "inet6", "address": "fd42:1::5", "netmask": "64", "scope": "global"},
                    {
                        "family": "inet6",
                        "address": "fe80::216:3eff:fe4a:1c01",
                        "netmask": "64",
                        "scope": "link",
                    },
                ],
                "counters": {"bytes_received": 1, "bytes_sent": 2, "packets_received": 3, "packets_sent": 4},
                "hwaddr": C1_HWADDR,
                "host_name": "veth5a1b2c3d",
                "mtu": 1500,
                "state": "up",
                "type": "broadcast",
            },
            "lo": {
                "addresses": [
                    {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
                    {"family": "inet6", "address": "::1", "netmask": "128", "scope": "local"},
                ],
                "counters": {},
                "hwaddr": "",
                "host_name": "",
                "mtu": 65536,
                "state": "up",
                "type": "loopback",
            },
        },
        "pid": 4242,
        "processes": 12,
        "cpu": {"usage": 1234},
    },
}

C1 = InstanceRecord(
    project="p1",
    name="c1",
    type="container",
    status="Running",
    location="h1",
    nics=(
        NicRecord(
            device="eth0",
            config=FrozenMap(
                {"name": "eth0", "network": "br0", "type": "nic", "ipv4.routes.external": "198.51.100.0/28"}
            ),
            hwaddr=C1_HWADDR,
            host_name="veth5a1b2c3d",
            addresses=("10.10.0.5/24", "fd42:1::5/64"),
        ),
    ),
    config=FrozenMap({"user.fabric.announce": "true", "user.fabric.routes": "198.51.100.0/28"}),
)

# A stopped VM on a standalone server, two NICs (one bridged to a parent, with a static hwaddr).
STOPPED_VM: dict[str, Any] = {
    "name": "vm1",
    "project": "default",
    "type": "virtual-machine",
    "status": "Stopped",
    "status_code": 102,
    "location": "none",
    "expanded_config": {"volatile.net1.hwaddr": "00:16:3e:00:00:b1", "security.secureboot": "false"},
    "expanded_devices": {
        "net1": {"network": "ovn0", "type": "nic"},
        "eth0": {"nictype": "bridged", "parent": "br1", "type": "nic", "hwaddr": "00:16:3e:00:00:a0"},
        "root": {"path": "/", "pool": "default", "type": "disk", "size": "10GiB"},
    },
    "state": {"status": "Stopped", "status_code": 102, "network": None, "pid": 0, "processes": 0},
}

# A running VM: lxd-agent reports guest interface names (enp5s0), not device names.
RUNNING_VM: dict[str, Any] = {
    "name": "vm2",
    "project": "default",
    "type": "virtual-machine",
    "status": "Running",
    "location": "h2",
    "expanded_config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:c2"},
    "expanded_devices": {"eth0": {"network": "br0", "type": "nic"}},
    "state": {
        "status": "Running",
        "network": {
            "enp5s0": {
                "addresses": [
                    {"family": "inet", "address": "10.10.0.9", "netmask": "24", "scope": "global"},
                    {
                        "family": "inet6",
                        "address": "fe80::216:3eff:fe00:c2",
                        "netmask": "64",
                        "scope": "link",
                    },
                ],
                "hwaddr": "00:16:3E:00:00:C2",
                "host_name": "tap1a2b3c4d",
            },
            "lo": {
                "addresses": [{"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"}]
            },
        },
    },
}

BRIDGE: dict[str, Any] = {
    "config": {
        "ipv4.address": "10.10.0.1/24",
        "ipv4.nat": "true",
        "ipv6.address": "fd42:1::1/64",
        "ipv6.nat": "true",
    },
    "description": "",
    "name": "br0",
    "type": "bridge",
    "used_by": ["/1.0/instances/c1?project=p1"],
    "managed": True,
    "status": "Created",
    "locations": ["h1", "h2"],
}

OVN: dict[str, Any] = {
    "config": {
        "bridge.mtu": "1442",
        "ipv4.address": "10.20.0.1/24",
        "ipv4.nat": "true",
        "network": "UPLINK",
        "volatile.network.ipv4.address": "192.0.2.100",
        "volatile.network.ipv6.address": "2001:db8::100",
    },
    "description": "",
    "name": "ovn0",
    "type": "ovn",
    "used_by": [],
    "managed": True,
    "status": "Created",
    "locations": ["h1", "h2"],
}

UNMANAGED: dict[str, Any] = {
    "config": {},
    "description": "",
    "name": "enp1s0",
    "type": "physical",
    "used_by": [],
    "managed": False,
    "status": "",
    "locations": None,
}

OVN_STATE = {
    "addresses": [],
    "counters": {"bytes_received": 0, "bytes_sent": 0},
    "hwaddr": "00:16:3e:7f:00:01",
    "mtu": 1442,
    "state": "up",
    "type": "broadcast",
    "bond": None,
    "bridge": None,
    "vlan": None,
    "ovn": {"chassis": "h1"},
}

FORWARD = {
    "listen_address": "192.0.2.10",
    "location": "h1",
    "description": "web",
    "config": {"target_address": "10.10.0.5"},
    "ports": [
        {
            "description": "",
            "protocol": "tcp",
            "listen_port": "80",
            "target_port": "8080",
            "target_address": "10.10.0.5",
        }
    ],
}

LOAD_BALANCER = {
    "listen_address": "192.0.2.20",
    "description": "",
    "config": {"healthcheck": "false"},
    "backends": [{"name": "b1", "description": "", "target_address": "10.20.0.5", "target_port": "80"}],
    "ports": [{"description": "", "protocol": "tcp", "listen_port": "80", "target_backend": ["b1"]}],
}

MEMBER = {
    "server_name": "h1",
    "url": "https://10.0.0.1:8443",
    "database": True,
    "status": "Online",
    "message": "Fully operational",
    "architecture": "x86_64",
    "failure_domain": "default",
    "description": "",
    "config": {},
    "groups": ["default"],
    "roles": ["database"],
}


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of base with top-level keys replaced (a value of ... deletes the key)."""
    raw = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


# --- instances ----------------------------------------------------------------------------------


def test_running_container_gives_the_exact_record() -> None:
    assert parse_instance(CONTAINER) == C1


def test_instance_parsing_does_not_touch_the_input() -> None:
    before = copy.deepcopy(CONTAINER)
    parse_instance(CONTAINER)
    assert before == CONTAINER


def test_only_user_keys_of_the_expanded_config_are_kept() -> None:
    record = parse_instance(CONTAINER)
    assert set(record.config) == {"user.fabric.announce", "user.fabric.routes"}
    assert not any(key.startswith(("volatile.", "image.", "limits.")) for key in record.config)
    # the local config (not expanded) is not where config comes from
    only_local = variant(CONTAINER, config={"user.local": "x"}, expanded_config={})
    assert parse_instance(only_local).config == {}


def test_volatile_churn_does_not_change_the_record() -> None:
    restarted = copy.deepcopy(CONTAINER)
    restarted["expanded_config"]["volatile.last_state.power"] = "STOPPED"
    restarted["expanded_config"]["volatile.eth0.host_name"] = "veth99999999"
    restarted["expanded_config"]["volatile.uuid"] = "another"
    assert parse_instance(restarted) == C1
    assert hash(parse_instance(restarted)) == hash(C1)


def test_stopped_vm_on_a_standalone_server() -> None:
    record = parse_instance(STOPPED_VM)
    assert record == InstanceRecord(
        project="default",
        name="vm1",
        type="virtual-machine",
        status="Stopped",
        location=STANDALONE,
        nics=(
            NicRecord(
                "eth0",
                FrozenMap(
                    {"nictype": "bridged", "parent": "br1", "type": "nic", "hwaddr": "00:16:3e:00:00:a0"}
                ),
                hwaddr="00:16:3e:00:00:a0",
            ),
            NicRecord("net1", FrozenMap({"network": "ovn0", "type": "nic"}), hwaddr="00:16:3e:00:00:b1"),
        ),
    )
    assert not record.running
    assert [nic.network for nic in record.nics] == [None, "ovn0"]


def test_running_vm_nics_are_matched_to_guest_interfaces_by_hwaddr() -> None:
    record = parse_instance(RUNNING_VM)
    assert record.running
    assert record.nics == (
        NicRecord(
            "eth0",
            FrozenMap({"network": "br0", "type": "nic"}),
            hwaddr="00:16:3e:00:00:c2",
            host_name="tap1a2b3c4d",
            addresses=("10.10.0.9/24",),
        ),
    )


def test_nic_name_key_picks_the_state_interface() -> None:
    raw = variant(
        CONTAINER,
        expanded_devices={"lan": {"name": "eth0", "network": "br0", "type": "nic"}},
        expanded_config={"volatile.lan.hwaddr": C1_HWADDR},
    )
    (nic,) = parse_instance(raw).nics
    assert nic.device == "lan"
    assert nic.hwaddr == C1_HWADDR
    assert nic.addresses == ("10.10.0.5/24", "fd42:1::5/64")


def test_nics_are_ordered_by_device_name_and_only_nics() -> None:
    raw = variant(
        CONTAINER,
        expanded_devices={
            "z9": {"network": "br0", "type": "nic"},
            "root": {"path": "/", "pool": "default", "type": "disk"},
            "a1": {"network": "br1", "type": "nic"},
            "gpu0": {"type": "gpu"},
            "eth0": {"network": "br2", "type": "nic"},
            "weird": "not a device",
        },
    )
    assert [nic.device for nic in parse_instance(raw).nics] == ["a1", "eth0", "z9"]


def test_only_global_addresses_are_kept_and_sorted() -> None:
    raw = copy.deepcopy(CONTAINER)
    raw["state"]["network"]["eth0"]["addresses"] = [
        {"family": "inet6", "address": "fd42:1::5", "netmask": "64", "scope": "global"},
        {"family": "inet6", "address": "fe80::1", "netmask": "64", "scope": "link"},
        {"family": "inet", "address": "127.0.0.2", "netmask": "8", "scope": "local"},
        {"family": "inet", "address": "10.10.0.5", "netmask": 24, "scope": "global"},
        {"family": "inet", "address": "10.10.0.6", "scope": "global"},  # no netmask: skipped
        {"family": "inet", "netmask": "24", "scope": "global"},  # no address: skipped
        {"family": "inet", "address": "10.10.0.7", "netmask": True, "scope": "global"},  # bool: skipped
        "garbage",
        None,
    ]
    (nic,) = parse_instance(raw).nics
    assert nic.addresses == ("10.10.0.5/24", "fd42:1::5/64")


def test_status_comes_from_the_state_when_present() -> None:
    raw = variant(CONTAINER, status="Running", state={"status": "Frozen", "network": None})
    assert parse_instance(raw).status == "Frozen"
    no_state = variant(CONTAINER, status="Error", state=...)
    assert parse_instance(no_state).status == "Error"
    empty_state_status = variant(CONTAINER, status="Stopped", state={"status": ""})
    assert parse_instance(empty_state_status).status == "Stopped"


def test_defaults_for_project_type_and_location() -> None:
    raw = variant(CONTAINER, project=..., type=..., location=...)
    record = parse_instance(raw, default_project="p9")
    assert (record.project, record.type, record.location) == ("p9", "container", STANDALONE)
    empty = variant(CONTAINER, project="", location="")
    record = parse_instance(empty, default_project="p9")
    assert (record.project, record.location) == ("p9", STANDALONE)


def test_missing_or_null_maps_are_empty() -> None:
    raw = variant(CONTAINER, expanded_config=None, expanded_devices=None, state=None)
    record = parse_instance(raw)
    assert record.nics == ()
    assert record.config == {}
    assert parse_instance(variant(CONTAINER, expanded_config=..., expanded_devices=...)).nics == ()


def test_nic_without_state_keeps_config_and_hwaddr() -> None:
    raw = variant(CONTAINER, state=...)
    (nic,) = parse_instance(raw).nics
    assert nic == NicRecord("eth0", C1.nics[0].config, hwaddr=C1_HWADDR)


@pytest.mark.parametrize("state", ["garbage", 42, ["x"], True])
def test_state_that_is_not_a_mapping_is_tolerated(state: object) -> None:
    record = parse_instance(variant(CONTAINER, state=state))
    assert record.status == "Running"  # from the top level
    assert record.nics[0].addresses == ()
    assert record.nics[0].host_name is None


def test_garbage_inside_state_interfaces_is_tolerated() -> None:
    raw = copy.deepcopy(CONTAINER)
    raw["state"]["network"]["eth0"] = "not an interface"
    (nic,) = parse_instance(raw).nics
    assert (nic.addresses, nic.host_name) == ((), None)
    raw["state"]["network"]["eth0"] = {"host_name": 7, "addresses": None}
    (nic,) = parse_instance(raw).nics
    assert (nic.addresses, nic.host_name) == ((), None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ...}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"name": ["c1"]}, "name"),
        ({"status": ..., "state": ...}, "status"),
        ({"status": 103, "state": ...}, "status"),
        ({"state": {"status": 103}}, "status"),
        ({"type": 1}, "type"),
        ({"project": 1}, "project"),
        ({"location": False}, "location"),
        ({"expanded_config": ["user.a=b"]}, "expanded_config"),
        ({"expanded_config": "user.a=b"}, "expanded_config"),
        ({"expanded_config": []}, "expanded_config"),
        ({"expanded_config": {"user.a": 1}}, "expanded_config"),
        ({"expanded_config": {"user.a": None}}, "expanded_config"),
        ({"expanded_config": {"user.a": {"nested": "x"}}}, "expanded_config"),
        ({"expanded_devices": ["eth0"]}, "expanded_devices"),
        ({"expanded_devices": "eth0"}, "expanded_devices"),
        ({"expanded_devices": {"eth0": {"type": "nic", "mtu": 1500}}}, "expanded_devices.eth0"),
        ({"state": {"status": "Running", "network": ["eth0"]}}, "state.network"),
        ({"state": {"status": "Running", "network": "eth0"}}, "state.network"),
        (
            {"state": {"status": "Running", "network": {"eth0": {"addresses": 5}}}},
            "state.network.eth0.addresses",
        ),
        (
            {"state": {"status": "Running", "network": {"eth0": {"addresses": "10.0.0.1"}}}},
            "state.network.eth0.addresses",
        ),
        (
            {"state": {"status": "Running", "network": {"eth0": {"addresses": {"address": "x"}}}}},
            "state.network.eth0.addresses",
        ),
    ],
)
def test_malformed_instance_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_instance(variant(CONTAINER, **changes))
    assert str(caught.value).startswith(f"{field}:")


def test_record_error_is_a_value_error() -> None:
    assert issubclass(RecordError, ValueError)


# --- networks -----------------------------------------------------------------------------------


def test_bridge_network() -> None:
    assert parse_network(BRIDGE, "default") == NetworkRecord(
        project="default",
        name="br0",
        type="bridge",
        managed=True,
        config=FrozenMap(
            {
                "ipv4.address": "10.10.0.1/24",
                "ipv4.nat": "true",
                "ipv6.address": "fd42:1::1/64",
                "ipv6.nat": "true",
            }
        ),
    )


def test_ovn_network_keeps_volatile_uplink_addresses_and_chassis() -> None:
    record = parse_network(OVN, "p2", ovn_chassis_of(OVN_STATE))
    assert record.ovn_chassis == "h1"
    assert record.project == "p2"
    assert record.type == "ovn"
    assert record.config["volatile.network.ipv4.address"] == "192.0.2.100"
    assert record.config["volatile.network.ipv6.address"] == "2001:db8::100"
    assert record.config == OVN["config"]


def test_unmanaged_network() -> None:
    assert parse_network(UNMANAGED, "default") == NetworkRecord("default", "enp1s0", "physical", False)
    assert parse_network(variant(UNMANAGED, config=None, managed=...), "default").managed is False


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ...}, "name"),
        ({"name": ""}, "name"),
        ({"name": 0}, "name"),
        ({"type": ...}, "type"),
        ({"type": None}, "type"),
        ({"config": ["ipv4.address"]}, "config"),
        ({"config": "x"}, "config"),
        ({"config": {"ipv4.nat": True}}, "config"),
        ({"config": {"bridge.mtu": 1500}}, "config"),
    ],
)
def test_malformed_network_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_network(variant(OVN, **changes), "default")
    assert str(caught.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    ("state", "chassis"),
    [
        (OVN_STATE, "h1"),
        ({"ovn": {"chassis": "h2"}}, "h2"),
        ({"addresses": [], "ovn": None}, None),  # bridge networks, and ovn without a chassis
        ({"addresses": []}, None),
        ({"ovn": {"chassis": ""}}, None),
        ({"ovn": {"chassis": 3}}, None),
        ({"ovn": {}}, None),
        ({"ovn": "h1"}, None),
        ({"ovn": ["h1"]}, None),
        (None, None),
        ({}, None),
        (["ovn"], None),
        ("ovn", None),
        (7, None),
    ],
)
def test_ovn_chassis_of_network_state(state: Any, chassis: str | None) -> None:
    assert ovn_chassis_of(state) == chassis


# --- forwards, load balancers, members -----------------------------------------------------------


def test_forward() -> None:
    assert parse_listener(FORWARD, "forward", "default", "br0") == ListenerRecord(
        kind="forward",
        project="default",
        network="br0",
        listen_address="192.0.2.10",
        location="h1",
        config=FrozenMap({"target_address": "10.10.0.5"}),
        description="web",
    )
    no_location = parse_listener(variant(FORWARD, location=..., config=None), "forward", "p1", "br0")
    assert (no_location.location, no_location.config) == ("", FrozenMap())


def test_load_balancer() -> None:
    assert parse_listener(LOAD_BALANCER, "load-balancer", "p2", "ovn0") == ListenerRecord(
        kind="load-balancer",
        project="p2",
        network="ovn0",
        listen_address="192.0.2.20",
        location="",
        config=FrozenMap({"healthcheck": "false"}),
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"listen_address": ...}, "listen_address"),
        ({"listen_address": ""}, "listen_address"),
        ({"listen_address": ["192.0.2.10"]}, "listen_address"),
        ({"location": 1}, "location"),
        ({"config": [1]}, "config"),
        ({"config": {"target_address": 5}}, "config"),
    ],
)
def test_malformed_forward_and_load_balancer(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError, match=f"^{field}:"):
        parse_listener(variant(FORWARD, **changes), "forward", "default", "br0")
    with pytest.raises(RecordError, match=f"^{field}:"):
        parse_listener(variant(LOAD_BALANCER, **changes), "load-balancer", "default", "ovn0")


def test_member() -> None:
    assert parse_member(MEMBER) == MemberRecord("h1", "Online", "https://10.0.0.1:8443")
    assert parse_member(variant(MEMBER, url=...)) == MemberRecord("h1", "Online", "")
    with pytest.raises(RecordError, match=r"^server_name:"):
        parse_member(variant(MEMBER, server_name=...))
    with pytest.raises(RecordError, match=r"^status:"):
        parse_member(variant(MEMBER, status=None))


def test_object_name_for_refusals() -> None:
    assert object_name({"name": "c1"}) == "c1"
    assert object_name({"listen_address": "192.0.2.10"}) == "192.0.2.10"
    assert object_name({"server_name": "h1"}) == "h1"
    assert object_name({"name": ""}) == "?"
    assert object_name({"name": 5}) == "?"
    assert object_name({"name": "x" * 500}) == "x" * 80
    assert object_name(["c1"]) == "?"
    assert object_name(None) == "?"


def test_snapshot_network_lookup() -> None:
    br = parse_network(BRIDGE, "default")
    snapshot = LXDSnapshot(member="h1", clustered=True, networks=(br,))
    assert snapshot.network("default", "br0") is br
    assert snapshot.network("p1", "br0") is None


# --- FrozenMap ----------------------------------------------------------------------------------


def test_frozen_map_is_hashable_and_order_independent() -> None:
    a = FrozenMap({"b": "2", "a": "1"})
    b = FrozenMap({"a": "1", "b": "2"})
    assert a == b
    assert hash(a) == hash(b)
    assert list(a) == ["a", "b"]  # ordered by key
    assert {a: "x"}[b] == "x"
    assert len({a, b}) == 1
    assert FrozenMap({"a": "1"}) != FrozenMap({"a": "2"})
    assert FrozenMap({"a": "1"}) != FrozenMap({"a": "1", "b": "2"})


def test_frozen_map_equals_a_dict_with_the_same_content() -> None:
    a = FrozenMap({"b": "2", "a": "1"})
    assert a == {"a": "1", "b": "2"}
    assert operator.eq({"b": "2", "a": "1"}, a)  # dict on the left: the reflected comparison
    assert a != {"a": "1"}
    assert a != [("a", "1"), ("b", "2")]
    assert a != "ab"
    assert FrozenMap() == {}
    assert FrozenMap(None) == FrozenMap({})


def test_frozen_map_is_immutable_and_detached_from_its_source() -> None:
    source = {"a": "1"}
    frozen = FrozenMap(source)
    source["a"] = "changed"
    source["b"] = "new"
    assert frozen == {"a": "1"}
    with pytest.raises(TypeError):
        frozen["a"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        del frozen["a"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        frozen.update({"x": "y"})  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        frozen.extra = 1  # type: ignore[attr-defined]
    assert frozen == {"a": "1"}


def test_frozen_map_reads_like_a_mapping() -> None:
    frozen = FrozenMap({"user.x": "1"})
    assert frozen["user.x"] == "1"
    assert frozen.get("missing") is None
    assert "user.x" in frozen
    assert dict(frozen) == {"user.x": "1"}
    assert repr(frozen) == "FrozenMap({'user.x': '1'})"
    with pytest.raises(KeyError):
        frozen["missing"]


def test_records_are_hashable_and_frozen() -> None:
    assert len({C1, parse_instance(CONTAINER)}) == 1
    with pytest.raises(AttributeError):
        C1.name = "other"  # type: ignore[misc]
