"""The overlay planner's rules: MTU, the head-end replication list, static MAC entries, refusals."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.authority.macs import server_mac
from fabricd.config.model import (
    LXD_CLUSTER_PEERS,
    FabricConfig,
    HostConfig,
    IPAddress,
    OverlayConfig,
    OverlayPeer,
)
from fabricd.frozen import FrozenMap
from fabricd.lxd.nics import normalize_mac
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, MemberRecord, NicRecord
from fabricd.overlay.model import FloodEntry, MacEntry, OverlayPlan, OverlayRefusal, PeerView
from fabricd.overlay.planner import plan_overlay

ME4, ME6 = IPv4Address("10.99.1.11"), IPv6Address("2001:db8:99::11")
M2, M3 = IPv4Address("10.99.1.12"), IPv4Address("10.99.1.13")
BRIDGE = "fabric0"


def cfg(
    peers: str | tuple[OverlayPeer, ...] = LXD_CLUSTER_PEERS,
    *,
    address: IPAddress = ME4,
    address6: IPv6Address | None = None,
    mtu: int | None = None,
) -> FabricConfig:
    host = HostConfig("m1", address, address6)
    return FabricConfig(Path("test.yaml"), host, overlay=OverlayConfig(True, BRIDGE, mtu=mtu, peers=peers))


def member(name: str, address: str, status: str = "Online") -> MemberRecord:
    host = f"[{address}]" if ":" in address else address
    return MemberRecord(name, status, f"https://{host}:8443")


MEMBERS = (member("m1", "10.99.1.11"), member("m2", "10.99.1.12"), member("m3", "10.99.1.13"))


def nic(mac: str | None, device: str = "eth0", **config: str) -> NicRecord:
    return NicRecord(device, FrozenMap(config or {"network": BRIDGE}), hwaddr=mac)


def inst(name: str, location: str, *nics: NicRecord, status: str = "Running") -> InstanceRecord:
    return InstanceRecord("default", name, "container", status, location, nics)


def snap(*instances: InstanceRecord, members: tuple[MemberRecord, ...] = MEMBERS) -> LXDSnapshot:
    return LXDSnapshot("m1", True, ("default",), instances=instances, members=members)


def reasons(plan: OverlayPlan) -> dict[str, str]:
    return {r.subject: r.reason for r in plan.refused}


# --- MTU -----------------------------------------------------------------------------------------


def test_mtu_is_underlay_minus_50_over_ipv4() -> None:
    plan = plan_overlay(cfg(), None, 1500)
    assert plan.mtu == 1450
    assert "mtu" not in reasons(plan)


def test_mtu_is_underlay_minus_70_over_ipv6() -> None:
    assert plan_overlay(cfg(address=ME6), None, 1500).mtu == 1430
    assert plan_overlay(cfg(address=ME6), None, 9000).mtu == 8930


def test_mtu_override_wins() -> None:
    assert plan_overlay(cfg(mtu=1400), None, 9000).mtu == 1400


def test_mtu_below_1280_with_ipv6_is_refused_and_falls_back_to_1280() -> None:
    plan = plan_overlay(cfg(address=ME6), None, 1340)
    assert plan.mtu == 1280
    assert "below 1280" in reasons(plan)["mtu"]
    # an IPv4 underlay with IPv6 on the host counts as IPv6 in use
    plan = plan_overlay(cfg(address6=ME6), None, 1300)
    assert (plan.mtu, "mtu" in reasons(plan)) == (1280, True)


def test_mtu_over_ipv4_only_falls_back_to_576() -> None:
    assert plan_overlay(cfg(), None, 1300).mtu == 1250
    plan = plan_overlay(cfg(mtu=500), None, 1500)
    assert plan.mtu == 576
    assert "overlay.mtu = 500" in reasons(plan)["mtu"]


# --- peers and the flood list --------------------------------------------------------------------


def test_flood_from_config_peers_excludes_self_by_name_and_address() -> None:
    peers = (
        OverlayPeer("m3", M3),
        OverlayPeer("m1", ME4),
        OverlayPeer("m2", M2),
        OverlayPeer("alias", ME4),
    )
    plan = plan_overlay(cfg(peers), None, 1500)
    assert plan.flood == (FloodEntry("m2", M2), FloodEntry("m3", M3))
    assert [(p.name, p.state) for p in plan.peers] == [
        ("alias", "self"),
        ("m1", "self"),
        ("m2", "up"),
        ("m3", "up"),
    ]


def test_flood_from_cluster_members_with_offline_members_shown_not_flooded() -> None:
    members = (*MEMBERS, member("m4", "10.99.1.14", "Evacuated"), member("m5", "10.99.1.15", "Offline"))
    plan = plan_overlay(cfg(), snap(members=members), 1500)
    assert plan.flood == (FloodEntry("m2", M2), FloodEntry("m3", M3))
    views = {p.name: p for p in plan.peers}
    assert views["m1"].state == "self"
    assert views["m4"] == PeerView("m4", ip_address("10.99.1.14"), "offline", "member is Evacuated")
    assert views["m5"].state == "offline"
    assert plan.refused == ()


def test_unparseable_member_url_is_refused() -> None:
    members = (*MEMBERS, MemberRecord("m4", "Online", "not a url"), MemberRecord("m5", "Online", ""))
    plan = plan_overlay(cfg(), snap(members=members), 1500)
    assert [f.peer for f in plan.flood] == ["m2", "m3"]
    assert "cannot parse URL" in reasons(plan)["member m4"]
    assert "member m5" in reasons(plan)


def test_cluster_peers_without_a_snapshot_are_refused() -> None:
    plan = plan_overlay(cfg(), None, 1500)
    assert plan.flood == ()
    assert "peers" in reasons(plan)


def test_peer_of_the_other_family_is_refused() -> None:
    peers = (OverlayPeer("m2", M2), OverlayPeer("m3", IPv6Address("2001:db8:99::13")))
    plan = plan_overlay(cfg(peers), None, 1500)
    assert plan.flood == (FloodEntry("m2", M2),)
    assert "IPv6" in reasons(plan)["peer m3"]
    members = (member("m1", "2001:db8:99::11"), member("m2", "10.99.1.12"), member("m3", "2001:db8:99::13"))
    plan = plan_overlay(cfg(address=ME6), snap(members=members), 1500)
    assert plan.flood == (FloodEntry("m3", IPv6Address("2001:db8:99::13")),)
    assert "peer m2" in reasons(plan)


def test_duplicate_peers_are_deduped_deterministically() -> None:
    peers = (
        OverlayPeer("m2", M2),
        OverlayPeer("m2", M2),  # identical: counts once, silently
        OverlayPeer("m3", IPv4Address("10.99.1.99")),
        OverlayPeer("m3", M3),  # same name, another address: the lower address wins
        OverlayPeer("m2b", M2),  # another name on m2's address: one flood entry
    )
    plan = plan_overlay(cfg(peers), None, 1500)
    assert plan.flood == (FloodEntry("m2", M2), FloodEntry("m3", M3))
    assert "10.99.1.99 ignored" in reasons(plan)["peer m3"]
    assert PeerView("m2b", M2, "up", "same address as m2") in plan.peers
    assert plan_overlay(cfg(tuple(reversed(peers))), None, 1500) == plan


# --- static MAC entries --------------------------------------------------------------------------


def test_macs_for_remote_running_instances_only() -> None:
    plan = plan_overlay(
        cfg(),
        snap(
            inst("local", "m1", nic("00:16:3e:00:00:01")),
            inst("remote", "m2", nic("00:16:3E:00:00:02"), nic("00:16:3e:00:00:99", "eth1", network="other")),
            inst("stopped", "m3", nic("00:16:3e:00:00:03"), status="Stopped"),
        ),
        1500,
    )
    assert plan.macs == (MacEntry("00:16:3e:00:00:02", M2, "default/remote/eth0"),)
    assert plan.refused == ()


def test_bridged_parent_form_is_on_the_overlay() -> None:
    plan = plan_overlay(
        cfg(),
        snap(
            inst("a", "m2", nic("00-16-3e-00-00-0a", nictype="bridged", parent=BRIDGE)),
            inst("b", "m2", nic("00:16:3e:00:00:0b", nictype="macvlan", parent=BRIDGE)),
        ),
        1500,
    )
    assert plan.macs == (MacEntry("00:16:3e:00:00:0a", M2, "default/a/eth0"),)


def test_bad_macs_are_refused() -> None:
    bad = {
        "none": None,
        "short": "00:16:3e:00:00",
        "junk": "zz:16:3e:00:00:01",
        "mixed": "00:16-3e:00:00:01",
        "zero": "00:00:00:00:00:00",
        "multicast": "01:00:5e:00:00:01",
        "broadcast": "ff:ff:ff:ff:ff:ff",
    }
    plan = plan_overlay(cfg(), snap(*(inst(k, "m2", nic(v)) for k, v in bad.items())), 1500)
    assert plan.macs == ()
    assert set(reasons(plan)) == {f"nic default/{k}/eth0" for k in bad}
    assert "multicast" in reasons(plan)["nic default/broadcast/eth0"]


def test_duplicate_mac_is_refused_for_every_claim() -> None:
    mac = "00:16:3e:00:00:05"
    plan = plan_overlay(
        cfg(), snap(inst("a", "m2", nic(mac)), inst("b", "m3", nic(mac)), inst("c", "m3", nic(mac))), 1500
    )
    assert plan.macs == ()
    assert "also claimed by default/b/eth0, default/c/eth0" in reasons(plan)["nic default/a/eth0"]
    # a local claim makes a remote entry ambiguous too
    plan = plan_overlay(cfg(), snap(inst("a", "m2", nic(mac)), inst("l", "m1", nic(mac))), 1500)
    assert plan.macs == ()
    assert len(plan.refused) == 2


def test_unknown_or_offline_location_is_refused() -> None:
    members = (*MEMBERS, member("m4", "10.99.1.14", "Offline"))
    plan = plan_overlay(
        cfg(),
        snap(
            inst("a", "m9", nic("00:16:3e:00:00:01")),
            inst("b", "m4", nic("00:16:3e:00:00:02")),
            members=members,
        ),
        1500,
    )
    assert plan.macs == ()
    assert "no overlay peer" in reasons(plan)["nic default/a/eth0"]
    assert "offline" in reasons(plan)["nic default/b/eth0"]


def test_instance_move_makes_the_entry_follow_the_new_member() -> None:
    a = inst("a", "m2", nic("00:16:3e:00:00:01"))
    assert plan_overlay(cfg(), snap(a), 1500).macs[0].vtep == M2
    assert plan_overlay(cfg(), snap(replace(a, location="m3")), 1500).macs[0].vtep == M3
    assert plan_overlay(cfg(), snap(replace(a, location="m1")), 1500).macs == ()


def test_config_peers_map_location_by_peer_name() -> None:
    peers = (OverlayPeer("m2", M2), OverlayPeer("m3", M3))
    plan = plan_overlay(cfg(peers), snap(inst("a", "m3", nic("00:16:3e:00:00:01")), members=()), 1500)
    assert plan.macs == (MacEntry("00:16:3e:00:00:01", M3, "default/a/eth0"),)
    standalone = LXDSnapshot("none", False, instances=(inst("a", "none", nic("00:16:3e:00:00:01")),))
    assert plan_overlay(cfg(peers), standalone, 1500).macs == ()


def test_normalize_mac() -> None:
    assert normalize_mac(" 00:16:3E:AA:bb:01 ") == ("00:16:3e:aa:bb:01", "")
    assert normalize_mac("02-00-00-00-00-01")[0] == "02:00:00:00:00:01"


# --- properties ----------------------------------------------------------------------------------

NAMES = st.sampled_from(["m1", "m2", "m3", "m4", "m5"])
STATUSES = st.sampled_from(["Online", "Online", "Offline", "Evacuated"])
HOSTS = st.integers(10, 16).map(lambda n: f"10.99.1.{n}")
MACS = st.one_of(
    st.integers(0, 6).map(lambda n: f"00:16:3e:00:00:{n:02x}"),
    st.sampled_from([None, "01:00:5e:00:00:01", "bogus", "00:16:3E:00:00:01"]),
)
MEMBER_LISTS = st.lists(st.builds(member, NAMES, HOSTS, STATUSES), max_size=6)
INSTANCES = st.lists(
    st.builds(
        lambda i, loc, macs, status: inst(
            f"i{i}", loc, *(nic(m, f"eth{n}") for n, m in enumerate(macs)), status=status
        ),
        st.integers(0, 9),
        st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m9"]),
        st.lists(MACS, max_size=2),
        st.sampled_from(["Running", "Running", "Stopped"]),
    ),
    max_size=8,
    unique_by=lambda i: i.name,
)
CONFIG_PEERS = st.lists(st.builds(OverlayPeer, NAMES, HOSTS.map(IPv4Address)), max_size=6).map(tuple)
PEER_SOURCES = st.one_of(st.just(LXD_CLUSTER_PEERS), CONFIG_PEERS)


def _vtep_key(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


@settings(max_examples=150, deadline=None)
@given(PEER_SOURCES, MEMBER_LISTS, INSTANCES, st.randoms(use_true_random=False))
def test_properties(
    peers: str | tuple[OverlayPeer, ...],
    members: list[MemberRecord],
    instances: list[InstanceRecord],
    rnd: random.Random,
) -> None:
    config = cfg(peers)
    snapshot = snap(*instances, members=tuple(members))
    plan = plan_overlay(config, snapshot, 1500)

    # never flood to this host
    assert all(f.peer != "m1" and f.vtep != ME4 for f in plan.flood)
    # one flood entry per VTEP, and every static entry points at one of them
    vteps = [f.vtep for f in plan.flood]
    assert len(vteps) == len(set(vteps))
    assert {m.vtep for m in plan.macs} <= set(vteps)
    # no MAC twice, only valid unicast MACs
    macs = [m.mac for m in plan.macs]
    assert len(macs) == len(set(macs))
    assert all(normalize_mac(m)[0] == m for m in macs)
    # sorted
    assert list(plan.flood) == sorted(plan.flood, key=lambda f: (_vtep_key(f.vtep), f.peer))
    assert macs == sorted(macs)
    assert list(plan.refused) == sorted(plan.refused, key=lambda r: (r.subject, r.reason))
    # deterministic under reordering
    shuffled_members, shuffled_instances = list(members), list(instances)
    rnd.shuffle(shuffled_members)
    rnd.shuffle(shuffled_instances)
    shuffled_peers = peers if isinstance(peers, str) else tuple(rnd.sample(peers, len(peers)))
    again = plan_overlay(
        cfg(shuffled_peers), snap(*shuffled_instances, members=tuple(shuffled_members)), 1500
    )
    assert again == plan


def test_refusal_records_are_data() -> None:
    assert OverlayRefusal("mtu", "x") == OverlayRefusal("mtu", "x")


def test_the_dhcp_servers_mac_follows_the_authority() -> None:
    config = cfg()
    mac = server_mac(config.overlay.vni)
    elsewhere = plan_overlay(config, snap(), 1500, authority=(mac, "m2"))
    assert [(m.mac, m.vtep, m.origin) for m in elsewhere.macs] == [(mac, M2, "dhcp-authority/m2")]
    assert plan_overlay(config, snap(), 1500, authority=(mac, "m1")).macs == ()  # served here
    unknown = plan_overlay(config, snap(), 1500, authority=(mac, "m9"))
    assert unknown.macs == () and [r.subject for r in unknown.refused] == ["authority m9"]
