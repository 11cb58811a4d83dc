"""Instance addresses at plan time: every overlay NIC of a known instance gets an address in its
dhcp-host line (its stable one, else a slot hashed from its MAC) and its names before it starts."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from ipaddress import IPv4Address, IPv4Interface, ip_address, ip_interface

from hypothesis import given, settings
from hypothesis import strategies as st

from fabric_lab.lxd_builders import large_overlay_config, large_overlay_snapshot
from fabricd.authority.dnsmasq_plan import DnsmasqPlan, InstanceSpace, Refusal, plan_dnsmasq
from fabricd.config import FabricConfig
from fabricd.lxd.nics import normalize_mac, on_bridge
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NicRecord
from tests.unit.lxd_strategies import OVERLAY, config, instance, snapshot
from tests.unit.test_dnsmasq_plan import (
    CONFIG,
    DHCP,
    SETTINGS,
    SPACE,
    _members,
    home,
    hosts,
    names_of,
    on,
    plan,
)

# A /28: hosts .1-.14, the server .1, the pool .2-.9, so five slots (.10-.14) for instances.
SMALL = config(
    DHCP.replace("10.200.0.1/24", "10.200.0.1/28").replace(
        "10.200.0.100-10.200.0.199", "10.200.0.2-10.200.0.9"
    )
)
SMALL_SPACE = tuple(IPv4Address(f"10.200.0.{i}") for i in range(10, 15))


def mac(i: int) -> str:
    return f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"


def new(name: str, i: int, status: str = "Stopped", *addresses: str) -> InstanceRecord:
    """An instance with one overlay NIC of MAC `mac(i)`: just created (stopped, no address) by default."""
    return instance(name, on(mac(i), *addresses), status=status)


def address_of(p: DnsmasqPlan, m: str) -> str | None:
    (found,) = [r for r in p.reservations if r.mac == m]
    return None if found.address is None else str(found.address)


def space_of(cfg: FabricConfig) -> tuple[IPv4Address, ...]:
    """The instance space by its definition: host addresses minus the server minus every pool."""
    server = cfg.dhcp.server_address
    assert server is not None
    return tuple(
        a
        for a in server.network.hosts()
        if a != server.ip and not any(lo <= a <= hi for lo, hi in cfg.dhcp.ranges)
    )


def full_reason(size: int) -> str:
    return f"the instance space ({size} addresses) is full: no fixed address, a dynamic lease"


# --- worked examples ------------------------------------------------------------------------------------


def test_a_created_instance_has_its_address_and_names_before_it_starts() -> None:
    p = plan(new("c1", 1))
    assert home(mac(1)) == ip_address("10.200.0.45")
    assert p.hosts_dhcp == "02:00:00:00:00:01,10.200.0.45,c1\n02:fd:02:00:00:64,10.200.0.199\n"
    assert p.hosts_dns == "10.200.0.45 c1.fabric.internal c1 c1.m1.fabric.internal\n"
    assert p.refused == ()
    # Started and given that address by DHCP, LXD reports it: the plan does not change.
    assert plan(new("c1", 1, "Running", "10.200.0.45/24", "fd00:200::45/64")).hosts_dhcp == p.hosts_dhcp


def test_colliding_homes_lowest_mac_first_and_home_slots_before_probing() -> None:
    # 01 and 10 share the home .45; .46 is 83's home, taken before anyone probes: 10 gets .47.
    assert [str(home(mac(i))) for i in (0x01, 0x10, 0x83)] == ["10.200.0.45", "10.200.0.45", "10.200.0.46"]
    records = [new("a", 0x01), new("b", 0x10), new("c", 0x83)]
    p = plan(*records)
    assert hosts(p) == [
        [mac(0x01), "10.200.0.45", "a"],
        [mac(0x10), "10.200.0.47", "b"],
        [mac(0x83), "10.200.0.46", "c"],
    ]
    assert plan(*reversed(records)) == p
    # Before 01 existed 10 sat at its home .45: the one NIC that moves when 01 is created is
    # the one that never had an address and collides with it.
    before = plan(new("b", 0x10), new("c", 0x83))
    assert (address_of(before, mac(0x10)), address_of(before, mac(0x83))) == ("10.200.0.45", "10.200.0.46")
    # Once LXD reports 10 at .45 it keeps it, and 01 (home .45) goes to the next free slot.
    reported = plan(new("a", 0x01), new("b", 0x10, "Running", "10.200.0.45/24"), new("c", 0x83))
    assert [address_of(reported, mac(i)) for i in (0x10, 0x83, 0x01)] == [
        "10.200.0.45",
        "10.200.0.46",
        "10.200.0.47",
    ]


def test_nics_that_lost_their_home_probe_lowest_mac_first() -> None:
    assert {home(mac(i)) for i in (0x09, 0x1A, 0x34)} == {ip_address("10.200.0.202")}
    p = plan(new("c", 0x34), new("b", 0x1A), new("a", 0x09))
    assert [address_of(p, mac(i)) for i in (0x09, 0x1A, 0x34)] == [
        "10.200.0.202",
        "10.200.0.203",
        "10.200.0.204",
    ]


def test_probing_wraps_round_to_the_lowest_slot() -> None:
    assert home(mac(0xFB)) == home(mac(0x17C)) == ip_address("10.200.0.254")  # the highest slot
    p = plan(new("a", 0xFB), new("b", 0x17C))
    assert (address_of(p, mac(0xFB)), address_of(p, mac(0x17C))) == ("10.200.0.254", "10.200.0.2")


def test_a_stopped_instance_gets_its_home_slot_back() -> None:
    running = plan(new("c1", 1, "Running", "10.200.0.45/24"), new("c2", 2))
    stopped = plan(new("c1", 1, "Stopped"), new("c2", 2))  # LXD reports no address while stopped
    assert address_of(running, mac(1)) == address_of(stopped, mac(1)) == "10.200.0.45"
    assert running.hosts_dhcp == stopped.hosts_dhcp and running.hosts_dns == stopped.hosts_dns


def test_addresses_in_use_on_the_overlay_are_never_a_slot() -> None:
    # .45 (01's home) on an instance refused for its name, .46 on a NIC whose MAC is refused, .47
    # on two instances (published for neither): every one of them is taken, so 01 gets .48.
    p = plan(
        new("bad_name", 0x30, "Running", "10.200.0.45/24"),
        new("x", 0x31, "Running", "10.200.0.46/24"),
        new("y", 0x31, "Running", "10.200.0.50/24"),
        new("p", 0x33, "Running", "10.200.0.47/24"),
        new("q", 0x36, "Running", "10.200.0.47/24"),
        new("c1", 0x01),
    )
    assert address_of(p, mac(0x01)) == "10.200.0.48"
    assert "instance default/bad_name@m1" in {r.subject for r in p.refused}
    assert mac(0x31) not in p.hosts_dhcp
    # p and q keep using .47 until one of them leaves; each is given its own slot meanwhile.
    assert "10.200.0.47" not in p.hosts_dhcp and "10.200.0.47" not in p.hosts_dns
    assert [address_of(p, mac(i)) for i in (0x33, 0x36)] == [str(home(mac(i))) for i in (0x33, 0x36)]


def test_a_sticky_address_wins_over_another_nics_home() -> None:
    p = plan(new("old", 0x02, "Running", "10.200.0.45/24"), new("c1", 0x01))
    assert (address_of(p, mac(0x02)), address_of(p, mac(0x01))) == ("10.200.0.45", "10.200.0.46")


def test_names_follow_the_address_the_nic_reports_once_it_reports_one() -> None:
    p = plan(
        new("pool", 0x01, "Running", "10.200.0.150/24"),  # a lease from before: moves at its next renewal
        new("v6", 0x02, "Running", "fd00:200::2/64"),  # SLAAC came before DHCP
        new("off", 0x03, "Running", "10.9.0.3/24"),  # some address of its own, outside the subnet
    )
    assert [address_of(p, mac(i)) for i in (1, 2, 3)] == [str(home(mac(i))) for i in (1, 2, 3)]
    names = names_of(p)
    assert names["pool"] == {"10.200.0.150"}  # what it has now, not what it will get
    assert names["v6"] == {str(home(mac(2))), "fd00:200::2"}
    assert "off" not in names  # it has an IPv4 address: the slot is not published for it


def test_a_full_instance_space_leaves_the_rest_to_dynamic_leases() -> None:
    # Homes in the five-slot space: 01 .14, 02 .10, 03 .13, 04 .13, 05 .10, 06 .12, 07 .11.
    homes = {i: home(mac(i), SMALL_SPACE) for i in range(1, 8)}
    assert [str(homes[i]).rsplit(".")[-1] for i in range(1, 8)] == ["14", "10", "13", "13", "10", "12", "11"]
    four = plan(*(new(f"c{i}", i) for i in (1, 2, 3, 4, 6)), cfg=SMALL)
    # 04 loses .13 to 03 and probes up: .14 is 01's, wrap round: .10 is 02's, .11 is free.
    assert [address_of(four, mac(i)) for i in (1, 2, 3, 4, 6)] == [
        "10.200.0.14", "10.200.0.10", "10.200.0.13", "10.200.0.11", "10.200.0.12",
    ]  # fmt: skip
    assert four.refused == ()
    full = plan(*(new(f"c{i}", i) for i in range(1, 8)), cfg=SMALL)
    # 07 takes its home .11 first; 04 and 05 lost their homes and find nothing free.
    assert hosts(full) == [
        [mac(1), "10.200.0.14", "c1"],
        [mac(2), "10.200.0.10", "c2"],
        [mac(3), "10.200.0.13", "c3"],
        [mac(4), "c4"],
        [mac(5), "c5"],
        [mac(6), "10.200.0.12", "c6"],
        [mac(7), "10.200.0.11", "c7"],
    ]
    assert full.refused == (
        Refusal("nic default/c4@m1/eth0", full_reason(5)),
        Refusal("nic default/c5@m1/eth0", full_reason(5)),
    )
    # c4 and c5 have no address until DHCP gives them one: no records yet; the rest as before.
    named = {n.split(".")[0] for n in names_of(full)}
    assert named == {"c1", "c2", "c3", "c6", "c7"}
    assert {a for a in full.hosts_dns.split() if a[0].isdigit()} == {str(a) for a in SMALL_SPACE}


def test_no_instance_space_at_all_is_the_old_plan_with_refusals() -> None:
    cfg = config(DHCP.replace("10.200.0.100-10.200.0.199", "10.200.0.2-10.200.0.254"))
    p = plan(new("c1", 1), new("c2", 2, "Running", "10.200.0.7/24"), cfg=cfg)
    assert hosts(p) == [[mac(1), "c1"], [mac(2), "c2"]]  # .7 is in the pool: no stable address
    assert p.refused == tuple(Refusal(f"nic default/{n}@m1/eth0", full_reason(0)) for n in ("c1", "c2"))
    assert p.hosts_dns == "10.200.0.7 c2.fabric.internal c2 c2.m1.fabric.internal\n"


def test_the_instance_space_numbering_and_the_hash_are_fixed() -> None:
    space = InstanceSpace(
        IPv4Interface("10.200.0.1/24"), [(IPv4Address("10.200.0.100"), IPv4Address("10.200.0.199"))]
    )
    assert space.size == len(SPACE) == 153
    assert [space.address(i) for i in (0, 97, 98, 152)] == [
        ip_address(a) for a in ("10.200.0.2", "10.200.0.99", "10.200.0.200", "10.200.0.254")
    ]
    assert [
        space.index(ip_address(a)) for a in ("10.200.0.1", "10.200.0.150", "10.200.0.200", "10.200.0.255")
    ] == [None, None, 98, None]
    # Pinned: the same on every host and Python (sha256, not hash()).
    assert hashlib.sha256(b"02:00:00:00:00:01").hexdigest()[:16] == "c27c02f297b7a634"
    assert space.home("02:00:00:00:00:01") == 0xC27C02F297B7A634 % 153 == 43
    assert space.address(43) == ip_address("10.200.0.45")


# --- properties -------------------------------------------------------------------------------------------

# Many MACs (homes collide now and then in the /24, always in the /28), a few hostile ones;
# addresses on homes and next to them, in the pool, outside the subnet, IPv6 and junk.
MACS = tuple(mac(i) for i in (*range(1, 0x40), 0xFB, 0x17C))
HOSTILE_MACS = (None, "zz", "ff:ff:ff:ff:ff:ff", "02-00-00-00-00-01")
ADDRESSES = tuple(f"10.200.0.{i}/24" for i in (2, 8, 9, 10, 11, 12, 13, 14, 45, 46, 47, 150, 202, 203, 254))
OTHER_ADDRESSES = ("10.200.0.1/24", "10.9.0.1/24", "fd00:200::9/64", "junk")
NAMES = ("a", "b", "c", "d", "e", "f", "g", "web", "bad_name")


def _nics() -> st.SearchStrategy[NicRecord]:
    return st.builds(
        lambda device, m, addresses, bridged: on(m, *addresses, device=device, bridged=bridged),
        st.sampled_from(("eth0", "eth0", "eth1")),
        st.sampled_from(MACS * 8 + HOSTILE_MACS),
        st.lists(st.sampled_from(ADDRESSES * 3 + OTHER_ADDRESSES), max_size=2).map(tuple),
        st.booleans(),
    )


def _instances() -> st.SearchStrategy[InstanceRecord]:
    return st.builds(
        lambda name, project, status, nics: instance(name, *nics, status=status, project=project),
        st.sampled_from(NAMES),
        st.sampled_from(("default", "default", "p2")),
        st.sampled_from(("Running", "Running", "Stopped")),
        st.lists(_nics(), min_size=1, max_size=2),
    )


SNAPSHOTS = st.lists(_instances(), max_size=10).map(lambda records: snapshot(*records))
CONFIGS = st.sampled_from((CONFIG, SMALL))


def _planned(snap: LXDSnapshot, cfg: FabricConfig) -> DnsmasqPlan:
    return plan_dnsmasq(snap, cfg, interface="fab-dhcp", mtu=1450)


def _reported_v4(nic: NicRecord) -> list[IPv4Address]:
    found = []
    for text in nic.addresses:
        try:
            address = ip_interface(text).ip
        except ValueError:
            continue
        if isinstance(address, IPv4Address):
            found.append(address)
    return found


def _sticky(snap: LXDSnapshot, p: DnsmasqPlan, cfg: FabricConfig) -> dict[str, IPv4Address]:
    """nic ident -> the address it must keep: its lowest reported address in the instance space
    that no other served instance reports and no earlier reserved NIC of its own took."""
    space = set(space_of(cfg))
    members = _members(snap)
    reporters: dict[IPv4Address, set[str]] = defaultdict(set)
    for i in members:
        for n in i.nics:
            if on_bridge(n, OVERLAY):
                for a in _reported_v4(n):
                    reporters[a].add(f"{i.project}/{i.name}@{i.location}")
    reserved = {r.nic for r in p.reservations}
    sticky = {}
    for i in members:
        ident = f"{i.project}/{i.name}@{i.location}"
        taken: set[IPv4Address] = set()
        for n in sorted((n for n in i.nics if on_bridge(n, OVERLAY)), key=lambda n: n.device):
            if f"{ident}/{n.device}" not in reserved:
                continue
            mine = sorted(
                a for a in _reported_v4(n) if a in space and reporters[a] == {ident} and a not in taken
            )
            if mine:
                taken.add(mine[0])
                sticky[f"{ident}/{n.device}"] = mine[0]
    return sticky


@SETTINGS
@given(SNAPSHOTS, CONFIGS, st.randoms(use_true_random=False))
def test_instance_address_properties(snap: LXDSnapshot, cfg: FabricConfig, rnd: random.Random) -> None:
    p = _planned(snap, cfg)
    space = space_of(cfg)
    given_out = [r.address for r in p.reservations if r.address is not None]
    # no address given twice, every one inside the instance space
    assert len(given_out) == len(set(given_out))
    assert set(given_out) <= set(space)
    # sticky addresses kept
    sticky = _sticky(snap, p, cfg)
    by_nic = {r.nic: r for r in p.reservations}
    for nic, address in sticky.items():
        assert by_nic[nic].address == address
    # a slot is never an address some overlay NIC reports, whoever it is
    in_use = {a for i in snap.instances for n in i.nics if on_bridge(n, OVERLAY) for a in _reported_v4(n)}
    slots = {r.address for r in p.reservations if r.nic not in sticky and r.address is not None}
    assert not slots & in_use
    # a NIC goes without an address only when the space is full, and says so
    full = {r.subject for r in p.refused if r.reason == full_reason(len(space))}
    assert full == {f"nic {r.nic}" for r in p.reservations if r.address is None}
    if full:
        assert set(space) <= in_use | set(given_out)
    # names are published for a planned address only when the NIC reports no IPv4 address
    for record in p.records:
        nics = [r for r in p.reservations if r.nic.rsplit("/", 1)[0] == record.instance]
        if all(record.address != r.address for r in nics):
            continue
        (r,) = [r for r in nics if r.address == record.address]
        device = r.nic.rsplit("/", 1)[1]
        i = next(i for i in snap.instances if record.instance == f"{i.project}/{i.name}@{i.location}")
        (n,) = [n for n in i.nics if n.device == device and on_bridge(n, OVERLAY)]
        assert record.address in _reported_v4(n) or not _reported_v4(n)
    # the same snapshot in any order gives the same plan, byte for byte
    shuffled = [
        InstanceRecord(
            i.project, i.name, i.type, i.status, i.location, tuple(rnd.sample(i.nics, len(i.nics)))
        )
        for i in rnd.sample(snap.instances, len(snap.instances))
    ]
    assert _planned(snapshot(*shuffled), cfg) == p


@SETTINGS
@given(
    SNAPSHOTS, CONFIGS, st.lists(st.sampled_from(MACS), min_size=1, max_size=2, unique=True), st.booleans()
)
def test_adding_an_instance_moves_only_unreported_nics_it_collides_with(
    snap: LXDSnapshot, cfg: FabricConfig, candidates: list[str], running: bool
) -> None:
    before = _planned(snap, cfg)
    used = {normalize_mac(n.hwaddr)[0] for i in snap.instances for n in i.nics}
    fresh = [m for m in candidates if m not in used]
    if not fresh:
        fresh = [next(m for m in MACS if m not in used)]
    # As LXD lists a new instance: no address yet, whether it is starting or not.
    created = instance(
        "new",
        *(on(m, device=f"eth{k}") for k, m in enumerate(fresh)),
        status="Running" if running else "Stopped",
    )
    after = _planned(
        LXDSnapshot(snap.member, snap.clustered, snap.projects, (), (*snap.instances, created)), cfg
    )

    space = space_of(cfg)
    sticky = _sticky(snap, before, cfg)
    now = {r.nic: r for r in after.reservations}
    for r in before.reservations:
        moved = now[r.nic]
        assert (moved.mac, moved.hostname) == (r.mac, r.hostname)  # nothing else about it changes
        if r.nic in sticky:
            assert moved.address == r.address  # LXD reports it there: it never moves
        elif r.address is not None and r.address == home(r.mac, space) and moved.address != r.address:
            # A NIC at its home leaves it only to a new MAC with that home that sorts lower.
            assert any(home(m, space) == r.address and m < r.mac for m in fresh)
    # the new instance's NICs are served, with an address unless the space is full
    for m in fresh:
        (r,) = [r for r in after.reservations if r.mac == m]
        assert r.address is not None or f"nic {r.nic}" in {x.subject for x in after.refused}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(20, 30),
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, 2**12), st.integers(0, 64)), max_size=3),
    st.lists(st.sampled_from(MACS), max_size=3),
)
def test_the_space_matches_its_definition(
    prefix: int, seed: int, holes: list[tuple[int, int]], macs: list[str]
) -> None:
    network = IPv4Interface(f"{IPv4Address(seed)}/{prefix}").network
    hosts_ = list(network.hosts())
    server = hosts_[seed % len(hosts_)]
    pools: list[tuple[IPv4Address, IPv4Address]] = []
    for start, length in holes:  # pools as the config allows them: apart, without the server
        first = start % len(hosts_)
        lo, hi = hosts_[first], hosts_[min(first + length, len(hosts_) - 1)]
        if not lo <= server <= hi and not any(a <= hi and lo <= b for a, b in pools):
            pools.append((lo, hi))
    space = InstanceSpace(IPv4Interface(f"{server}/{prefix}"), pools)
    expected = [a for a in network.hosts() if a != server and not any(lo <= a <= hi for lo, hi in pools)]
    assert space.size == len(expected)
    assert [space.address(i) for i in range(space.size)] == expected
    assert all(space.index(a) == i for i, a in enumerate(expected))
    assert space.index(server) is None and all(space.index(lo) is None for lo, _ in pools)
    for m in macs:
        if expected:
            assert space.address(space.home(m)) == home(m, tuple(expected))


def test_ten_thousand_instances_each_get_an_address_the_reported_ones_theirs() -> None:
    snap = large_overlay_snapshot(10_000)
    p = plan_dnsmasq(snap, large_overlay_config(), interface="fd-fabric0", mtu=1450)
    assert len(p.reservations) == 10_000 and p.refused == ()
    addresses = [r.address for r in p.reservations]
    assert None not in addresses and len(set(addresses)) == 10_000
    for i in snap.instances[::4]:  # a quarter report a stable address: they keep it
        (r,) = [r for r in p.reservations if r.nic == f"default/{i.name}@{i.location}/eth0"]
        assert f"{r.address}/16" == i.nics[0].addresses[0]
