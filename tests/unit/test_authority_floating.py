"""The floating server address's pure parts: MACs and names, the claim and release plans, the frames."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Interface, IPv6Interface

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from fabricd.authority.floating import (
    Change,
    FloatingSpec,
    FloatingState,
    LinkInfo,
    announcement_frames,
    device_names,
    plan_claim,
    plan_release,
)
from fabricd.authority.macs import is_local_unicast, link_local, port_mac, probe_mac, server_mac
from fabricd.authority.netns_io import in_netns, require_interface
from fabricd.config.loader import load_config_text

SPEC = FloatingSpec("fabric0", 100, IPv4Interface("10.200.0.1/24"))
SPEC6 = dataclasses.replace(SPEC, address6=IPv6Interface("fd00:200::1/64"))
BRIDGE = LinkInfo(index=5, kind="bridge", mac="3a:00:00:00:00:01", mtu=1450, up=True, arp_ignore=1)
DEVICE = LinkInfo(index=10, kind="veth", mac="02:fd:01:00:00:64", mtu=1450, up=True, peer=11, arp_ignore=1)
PORT = LinkInfo(index=11, kind="veth", mac="fe:fd:01:00:00:64", mtu=1450, up=True, master=5, peer=10)
SERVING = FloatingState(BRIDGE, DEVICE, PORT, (IPv4Interface("10.200.0.1/24"),))


def actions(changes: tuple[Change, ...]) -> list[str]:
    return [str(c) for c in changes]


# MACs and names


def test_macs_are_fixed_local_unicast_and_distinct() -> None:
    assert server_mac(100) == "02:fd:01:00:00:64"
    assert probe_mac(100) == "02:fd:02:00:00:64"
    assert port_mac(100) == "fe:fd:01:00:00:64"
    assert server_mac(0xABCDEF) == "02:fd:01:ab:cd:ef"


@given(st.integers(1, 2**24 - 1))
def test_every_vni_gives_three_local_unicast_macs_of_its_own(vni: int) -> None:
    macs = {server_mac(vni), probe_mac(vni), port_mac(vni)}
    assert len(macs) == 3 and all(is_local_unicast(m) for m in macs)
    assert server_mac(vni) != server_mac(vni % (2**24 - 1) + 1)


@pytest.mark.parametrize("vni", [0, 2**24, -1])
def test_a_vni_out_of_range_is_refused(vni: int) -> None:
    with pytest.raises(ValueError, match="VNI"):
        server_mac(vni)


def test_link_local_is_the_eui64_of_the_mac() -> None:
    assert link_local("02:fd:01:00:00:64") == IPv6Interface("fe80::fd:1ff:fe00:64/64")


def test_device_names_fit_an_interface_name() -> None:
    assert device_names("fabric0") == ("fd-fabric0", "fdp-fabric0")
    assert device_names("b" * 11) == ("fd-" + "b" * 11, "fdp-" + "b" * 11)
    long_a, long_b = device_names("overlay-bridge1"), device_names("overlay-bridge2")
    assert long_a != long_b
    assert all(len(name) <= 15 for name in (*long_a, *long_b))
    assert long_a[0].startswith("fd-overla")


@pytest.mark.parametrize("name", ["", "a/b", "x" * 16, ".."])
def test_no_interface_name_no_device(name: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        require_interface(name)
    with pytest.raises(ValueError):
        FloatingSpec(name, 100, IPv4Interface("10.200.0.1/24"))


def test_a_missing_namespace_is_an_error_never_created() -> None:
    with pytest.raises(FileNotFoundError):
        in_netns("fabricd-test-absent-namespace", lambda: None)
    with pytest.raises(ValueError, match="namespace"):
        in_netns("../etc", lambda: None)
    assert in_netns(None, lambda: 7) == 7


# The spec


def test_spec_addresses_with_ipv6_include_the_servers_link_local() -> None:
    assert SPEC.addresses == (IPv4Interface("10.200.0.1/24"),)
    assert SPEC6.addresses == (
        IPv4Interface("10.200.0.1/24"),
        IPv6Interface("fe80::fd:1ff:fe00:64/64"),
        IPv6Interface("fd00:200::1/64"),
    )
    assert (SPEC.device, SPEC.port, SPEC.mac) == ("fd-fabric0", "fdp-fabric0", "02:fd:01:00:00:64")


def test_spec_refuses_a_link_local_server_address() -> None:
    with pytest.raises(ValueError, match="link-local"):
        dataclasses.replace(SPEC, address6=IPv6Interface("fe80::1/64"))


def test_spec_from_config() -> None:
    config = load_config_text(
        "host: {name: a, underlay_address: 10.0.0.1}\n"
        "overlay: {enabled: true, bridge: ov0, vni: 4242, peers: []}\n"
        "dhcp: {enabled: true, server_address: 10.200.0.1/24, priority: [a]}\n",
        "test.yaml",
    )
    spec = FloatingSpec.from_config(config)
    assert (spec.bridge, spec.vni, spec.address, spec.device) == ("ov0", 4242, SPEC.address, "fd-ov0")
    with pytest.raises(ValueError, match="server_address"):
        FloatingSpec.from_config(load_config_text("host: {name: a, underlay_address: 10.0.0.1}\n", "t.yaml"))


# Claim


def test_claim_from_nothing_creates_attaches_addresses_and_brings_up_in_order() -> None:
    bridge = dataclasses.replace(BRIDGE, arp_ignore=0)
    assert actions(plan_claim(SPEC6, FloatingState(bridge, None, None))) == [
        "create fd-fabric0/fdp-fabric0",
        "attach fdp-fabric0 to fabric0",
        "arp_ignore fabric0",
        "arp_ignore fd-fabric0",
        "add address 10.200.0.1/24",
        "add address fe80::fd:1ff:fe00:64/64",
        "add address fd00:200::1/64",
        "up fdp-fabric0",
        "up fd-fabric0",
    ]


def test_claim_when_serving_does_nothing() -> None:
    assert plan_claim(SPEC, SERVING) == ()


def test_claim_without_the_bridge_is_an_error() -> None:
    with pytest.raises(ValueError, match="bridge fabric0 does not exist"):
        plan_claim(SPEC, FloatingState(None, None, None))


def test_claim_repairs_in_place_what_it_can() -> None:
    state = FloatingState(
        dataclasses.replace(BRIDGE, arp_ignore=0, mtu=1400),
        dataclasses.replace(DEVICE, mac="02:00:00:00:00:01", up=False, arp_ignore=0),
        dataclasses.replace(PORT, master=None, up=False),
        (IPv4Interface("10.200.0.1/16"), IPv4Interface("10.9.9.9/24")),
    )
    assert actions(plan_claim(SPEC, state)) == [
        "set mac fd-fabric0 02:fd:01:00:00:64",
        "set mtu fd-fabric0/fdp-fabric0 1400",
        "attach fdp-fabric0 to fabric0",
        "arp_ignore fabric0",
        "arp_ignore fd-fabric0",
        "remove address 10.200.0.1/16",
        "remove address 10.9.9.9/24",
        "add address 10.200.0.1/24",
        "up fdp-fabric0",
        "up fd-fabric0",
    ]


def test_claim_resets_a_port_mac_that_changed() -> None:
    state = dataclasses.replace(SERVING, port=dataclasses.replace(PORT, mac="fe:00:00:00:00:01"))
    assert actions(plan_claim(SPEC, state)) == ["set port mac fdp-fabric0 fe:fd:01:00:00:64"]


@pytest.mark.parametrize(
    "device, port",
    [
        (dataclasses.replace(DEVICE, kind="dummy", peer=None), None),  # someone's device with our name
        (DEVICE, None),  # the port is gone (moved to another namespace)
        (dataclasses.replace(DEVICE, peer=None), dataclasses.replace(PORT, peer=None)),  # two strangers
    ],
)
def test_claim_replaces_what_is_not_one_veth_pair(device: LinkInfo, port: LinkInfo | None) -> None:
    changes = actions(plan_claim(SPEC, FloatingState(BRIDGE, device, port, SERVING.addresses)))
    expected_deletes = ["delete fd-fabric0"] + (["delete fdp-fabric0"] if port is not None else [])
    assert changes[: len(expected_deletes) + 1] == [*expected_deletes, "create fd-fabric0/fdp-fabric0"]
    assert "add address 10.200.0.1/24" in changes and changes[-1] == "up fd-fabric0"


def test_claim_creates_when_only_an_orphan_port_is_left() -> None:
    changes = actions(plan_claim(SPEC, FloatingState(BRIDGE, None, dataclasses.replace(PORT, peer=None))))
    assert changes[:2] == ["delete fdp-fabric0", "create fd-fabric0/fdp-fabric0"]


# Release


def test_release_removes_the_addresses_first_then_the_device() -> None:
    assert actions(plan_release(SPEC, SERVING)) == ["remove address 10.200.0.1/24", "delete fd-fabric0"]


def test_release_of_nothing_does_nothing_and_an_orphan_port_goes() -> None:
    assert plan_release(SPEC, FloatingState(BRIDGE, None, None)) == ()
    assert plan_release(SPEC, FloatingState(None, None, None)) == ()
    assert actions(plan_release(SPEC, FloatingState(BRIDGE, None, PORT))) == ["delete fdp-fabric0"]


def test_status_says_what_is_there() -> None:
    assert SERVING.status() == {
        "present": True,
        "up": True,
        "mac": "02:fd:01:00:00:64",
        "addresses": ["10.200.0.1/24"],
        "attached": True,
    }
    assert FloatingState(BRIDGE, None, None).status()["present"] is False


# Announcements


def test_gratuitous_arp_names_the_address_as_sender_and_target() -> None:
    (frame,) = announcement_frames(SPEC.mac, SPEC.addresses)
    parsed = Ether(bytes(frame))
    assert parsed.dst == "ff:ff:ff:ff:ff:ff" and parsed.src == SPEC.mac
    arp = parsed[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst, arp.hwdst) == (
        1, SPEC.mac, "10.200.0.1", "10.200.0.1", "00:00:00:00:00:00",
    )  # fmt: skip


def test_unsolicited_na_per_ipv6_address_overrides_with_the_server_mac() -> None:
    frames = announcement_frames(SPEC6.mac, SPEC6.addresses)
    assert len(frames) == 3
    targets = []
    for frame in frames[1:]:
        raw = bytes(frame)
        parsed = Ether(raw)
        assert parsed.dst == "33:33:00:00:00:01" and parsed.src == SPEC.mac
        ip6, na = parsed[IPv6], parsed[ICMPv6ND_NA]
        assert (ip6.dst, ip6.hlim, ip6.src) == ("ff02::1", 255, na.tgt)
        assert (na.R, na.S, na.O) == (0, 0, 1)
        assert parsed[ICMPv6NDOptDstLLAddr].lladdr == SPEC.mac
        checksum = na.cksum
        del na.cksum
        assert Ether(bytes(parsed))[ICMPv6ND_NA].cksum == checksum  # valid on the wire
        targets.append(na.tgt)
    assert targets == ["fe80::fd:1ff:fe00:64", "fd00:200::1"]
