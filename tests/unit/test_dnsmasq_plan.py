"""The dnsmasq planner: reservations, names and records from LXD, the duplicate-name rule, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
from collections import defaultdict
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabricd.authority.dnsmasq_plan import (
    DnsmasqPlan,
    NameConflict,
    Refusal,
    Reservation,
    is_label,
    plan_dnsmasq,
)
from fabricd.config import FabricConfig
from fabricd.frozen import FrozenMap
from fabricd.lxd.nics import normalize_mac, on_bridge
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NicRecord
from tests.unit.lxd_strategies import OVERLAY, config, instance, instances, overlay_instances, snapshot

SERVER = "10.200.0.1/24"
SUBNET = ip_network("10.200.0.0/24")
POOL = (IPv4Address("10.200.0.100"), IPv4Address("10.200.0.199"))
DHCP = f"""overlay:
  enabled: true
dhcp:
  enabled: true
  domain: Fabric.Internal
  server_address: {SERVER}
  ranges: [10.200.0.100-10.200.0.199]
  lease_time: 600
  election: lxd-cluster
daemon:
  state_dir: /run/fabricd-test
"""
CONFIG = config(DHCP)
STANDALONE_CONFIG = config(DHCP, host="host:\n  name: h7\n  underlay_address: 192.0.2.11\n")


def on(mac: str | None, *addresses: str, device: str = "eth0", bridged: bool = False) -> NicRecord:
    cfg = {"nictype": "bridged", "parent": OVERLAY} if bridged else {"network": OVERLAY}
    return NicRecord(device, FrozenMap(cfg), mac, addresses=addresses)


def plan(*records: InstanceRecord, cfg: FabricConfig = CONFIG, clustered: bool = True) -> DnsmasqPlan:
    snap = snapshot(*records, member="m1" if clustered else "none", clustered=clustered)
    return plan_dnsmasq(snap, cfg, interface="fab-dhcp", mtu=1450)


def names_of(p: DnsmasqPlan) -> dict[str, set[str]]:
    """name -> addresses, from the hosts.dns text itself."""
    found: dict[str, set[str]] = defaultdict(set)
    for line in p.hosts_dns.splitlines():
        address, *names = line.split()
        for name in names:
            found[name].add(address)
    return found


def hosts(p: DnsmasqPlan) -> list[list[str]]:
    """The instances' dhcp-host lines (the probe's is left out)."""
    probe = p.probe.line() if p.probe else None
    return [line.split(",") for line in p.hosts_dhcp.splitlines() if line != probe]


# The instance space of CONFIG, by its definition: the subnet's host addresses minus the server
# (.1) and the pool (.100-.199), upwards.
SPACE = tuple(a for a in SUBNET.hosts() if a != IPv4Address("10.200.0.1") and not POOL[0] <= a <= POOL[1])


def home(mac: str, space: tuple[IPv4Address, ...] = SPACE) -> IPv4Address:
    """A MAC's home slot: sha256 of its lower-case colon text, first 8 bytes big-endian, mod size."""
    return space[int.from_bytes(hashlib.sha256(mac.encode()).digest()[:8], "big") % len(space)]


# --- the files --------------------------------------------------------------------------------------


def test_one_instance_gives_exact_files() -> None:
    p = plan(instance("c1", on("02:00:00:00:00:01", "10.200.0.5/24", "fd00:200::5/64")))
    # the probe's line last: MAC 02:fd:02:<VNI 100>, the last address of the highest pool
    assert p.hosts_dhcp == "02:00:00:00:00:01,10.200.0.5,c1\n02:fd:02:00:00:64,10.200.0.199\n"
    assert p.hosts_dns == (
        "10.200.0.5 c1.fabric.internal c1 c1.m1.fabric.internal\n"
        "fd00:200::5 c1.fabric.internal c1 c1.m1.fabric.internal\n"
    )
    assert p.conf == (
        "# Written by fabricd from LXD and its config; every change here is overwritten.\n"
        "interface=fab-dhcp\n"
        "bind-interfaces\n"
        "except-interface=lo\n"
        "no-resolv\n"
        "no-hosts\n"
        "no-poll\n"
        "domain-needed\n"
        "bogus-priv\n"
        "log-facility=-\n"
        "quiet-dhcp\n"
        "quiet-ra\n"
        "domain=fabric.internal\n"
        "local=/fabric.internal/\n"
        "local=/0.200.10.in-addr.arpa/\n"
        "addn-hosts=/run/fabricd-test/dnsmasq/hosts.dns\n"
        "dhcp-hostsfile=/run/fabricd-test/dnsmasq/hosts.dhcp\n"
        "dhcp-leasefile=/run/fabricd-test/dnsmasq/leases\n"
        "dhcp-authoritative\n"
        "dhcp-ignore-names\n"
        "dhcp-range=10.200.0.100,10.200.0.199,255.255.255.0,600\n"
        "dhcp-option-force=option:mtu,1450\n"
        "dhcp-option=option:router\n"
        'dhcp-option-force=224,"m1"\n'
    )
    assert "no-ping" not in p.conf and "server=" not in p.conf
    assert p.refused == () and p.conflicts == ()


def test_ipv6_ra_no_pools_and_odd_prefixes_change_the_conf() -> None:
    cfg = config(
        "overlay: {enabled: true}\n"
        "dhcp:\n  enabled: true\n  server_address: 10.200.0.129/25\n  ipv6_ra: true\n"
        "  election: lxd-cluster\n"
    )
    conf = plan(cfg=cfg).conf
    assert "enable-ra\ndhcp-range=::,constructor:fab-dhcp,ra-only\n" in conf
    assert "dhcp-range=10.200.0.128,static,255.255.255.128,3600\n" in conf  # reservations still served
    assert "in-addr.arpa" not in conf  # a /25 is no whole reverse zone
    assert "enable-ra" not in plan().conf


@pytest.mark.skipif(
    shutil.which("dnsmasq") is None and not os.environ.get("CI"),
    reason="dnsmasq is not installed (setup installs it)",
)
def test_dnsmasq_accepts_the_conf_and_the_hosts_lines(tmp_path: Path) -> None:
    cfg = config(DHCP.replace("/run/fabricd-test", str(tmp_path)).replace("600\n", "600\n  ipv6_ra: true\n"))
    p = plan(
        instance("c1", on("02:00:00:00:00:01", "10.200.0.5/24")),
        instance("c2", on("02:00:00:00:00:02", "10.200.0.150/24")),
        instance("c3", on("02:00:00:00:00:03")),
        cfg=cfg,
    )
    conf = tmp_path / "dnsmasq.conf"
    # The hosts file lines as dhcp-host options: --test parses options, not the files.
    conf.write_text(p.conf + "".join(f"dhcp-host={line}\n" for line in p.hosts_dhcp.splitlines()))
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "syntax check OK" in checked.stderr


def test_bad_interface_or_mtu_is_a_programming_error() -> None:
    snap = snapshot()
    for bad in ("", "a" * 16, "fab\ninterface=eth0", "..", "a/b"):
        with pytest.raises(ValueError, match="interface name"):
            plan_dnsmasq(snap, CONFIG, interface=bad, mtu=1450)
    with pytest.raises(ValueError, match="MTU"):
        plan_dnsmasq(snap, CONFIG, interface="fab-dhcp", mtu=67)
    with pytest.raises(ValueError, match="server_address"):
        plan_dnsmasq(snap, config("overlay: {enabled: true}\n"), interface="fab-dhcp", mtu=1450)


# --- reservations -------------------------------------------------------------------------------------


def test_stable_address_is_the_current_one_outside_the_pools_else_the_home_slot() -> None:
    p = plan(
        instance("in-pool", on("02:00:00:00:00:01", "10.200.0.150/24")),
        instance("outside", on("02:00:00:00:00:02", "10.9.0.1/24")),
        instance("two", on("02:00:00:00:00:03", "10.200.0.9/24", "10.200.0.8/24", "fd00::3/64")),
        instance("none-yet", on("02:00:00:00:00:04"), status="Stopped"),
    )
    assert (home("02:00:00:00:00:01"), home("02:00:00:00:00:02")) == (
        ip_address("10.200.0.45"),
        ip_address("10.200.0.8"),
    )
    assert home("02:00:00:00:00:04") == ip_address("10.200.0.32")
    assert hosts(p) == [
        ["02:00:00:00:00:01", "10.200.0.45", "in-pool"],  # a pool address is no stable one: its home slot
        ["02:00:00:00:00:02", "10.200.0.10", "outside"],  # home .8 is two's, .9 is in use: the next free
        ["02:00:00:00:00:03", "10.200.0.8", "two"],  # the lowest of several
        ["02:00:00:00:00:04", "10.200.0.32", "none-yet"],  # stopped: ready for when it starts
    ]
    assert (
        Refusal("nic default/outside@m1/eth0", "address 10.9.0.1 is outside the overlay subnet 10.200.0.0/24")
        in p.refused
    )


def test_only_nics_on_the_overlay_bridge_count() -> None:
    elsewhere = NicRecord(
        "eth1", FrozenMap({"network": "br0"}), "02:00:00:00:00:09", addresses=("10.200.0.9/24",)
    )
    p = plan(
        instance("c1", on("02:00:00:00:00:01", "10.200.0.5/24", bridged=True), elsewhere),
        instance("off", elsewhere),
    )
    assert hosts(p) == [["02:00:00:00:00:01", "10.200.0.5", "c1"]]
    assert set(names_of(p)) == {"c1", "c1.fabric.internal", "c1.m1.fabric.internal"}


def test_two_overlay_nics_share_the_names_and_only_the_first_gets_the_hostname() -> None:
    p = plan(instance("c1", on("02:00:00:00:00:02", "10.200.0.6/24", device="eth1"), on("02:00:00:00:00:01")))
    assert hosts(p) == [["02:00:00:00:00:01", "10.200.0.45", "c1"], ["02:00:00:00:00:02", "10.200.0.6"]]
    assert names_of(p)["c1"] == {"10.200.0.6", "10.200.0.45"}  # eth0 has no address yet: its slot


def test_a_mac_on_two_nics_goes_to_the_one_running_else_to_none() -> None:
    p = plan(
        instance("run", on("02:00:00:00:00:01")),
        instance("copy", on("02-00-00-00-00-01"), status="Stopped"),  # the same MAC, other spelling
        instance("a", on("02:00:00:00:00:02")),
        instance("b", on("02:00:00:00:00:02")),
    )
    assert hosts(p) == [["02:00:00:00:00:01", "10.200.0.45", "run"]]
    refused = {r.subject: r.reason for r in p.refused}
    assert (
        refused["nic default/copy@m1/eth0"]
        == "MAC 02:00:00:00:00:01 is also on default/run@m1/eth0: no DHCP reservation"
    )
    assert "nic default/a@m1/eth0" in refused and "nic default/b@m1/eth0" in refused


def test_an_address_on_two_instances_is_published_for_neither() -> None:
    p = plan(
        instance("a", on("02:00:00:00:00:01", "10.200.0.5/24", "10.200.0.6/24")),
        instance("b", on("02:00:00:00:00:02", "10.200.0.5/24")),
    )
    assert names_of(p)["a"] == {"10.200.0.6"}
    assert "b" not in names_of(p)  # b has no other address: no line at all
    assert "10.200.0.5" not in p.hosts_dns and "10.200.0.5" not in p.hosts_dhcp
    assert (
        Refusal("nic default/b@m1/eth0", "address 10.200.0.5 is also on default/a@m1: not published")
        in p.refused
    )


# --- names --------------------------------------------------------------------------------------------


def test_same_name_in_two_projects_the_default_project_keeps_the_bare_name() -> None:
    p = plan(
        instance("web", on("02:00:00:00:00:01", "10.200.0.5/24"), location="m2"),
        instance("web", on("02:00:00:00:00:02", "10.200.0.6/24"), project="p2", location="m1"),
    )
    assert p.conflicts == (NameConflict("web", ("default/web@m2", "p2/web@m1"), "default/web@m2"),)
    names = names_of(p)
    assert names["web"] == names["web.fabric.internal"] == names["web.m2.fabric.internal"] == {"10.200.0.5"}
    assert names["web.p2.m1.fabric.internal"] == {"10.200.0.6"}
    assert hosts(p) == [["02:00:00:00:00:01", "10.200.0.5", "web"], ["02:00:00:00:00:02", "10.200.0.6"]]


def test_same_name_on_two_locations_the_lowest_location_keeps_it() -> None:
    # Two default-project instances with one name: LXD never has that in one cluster, but merged
    # views of standalone hosts do.
    p = plan(
        instance("db", on("02:00:00:00:00:01", "10.200.0.5/24"), location="m2"),
        instance("db", on("02:00:00:00:00:02", "10.200.0.6/24"), location="m1"),
    )
    assert p.conflicts[0].holder == "default/db@m1"
    assert names_of(p)["db.fabric.internal"] == {"10.200.0.6"}
    assert names_of(p)["db.m2.fabric.internal"] == {"10.200.0.5"}


def test_no_unique_holder_means_no_bare_name_at_all() -> None:
    p = plan(
        instance("web", on("02:00:00:00:00:01", "10.200.0.5/24"), project="p2"),
        instance("Web", on("02:00:00:00:00:02", "10.200.0.6/24"), project="p3"),
        instance("DB", on("02:00:00:00:00:03", "10.200.0.7/24")),
        instance("db", on("02:00:00:00:00:04", "10.200.0.8/24")),
    )
    names = names_of(p)
    assert "web" not in names and "web.fabric.internal" not in names
    assert "db" not in names and "db.fabric.internal" not in names
    assert names["web.p2.m1.fabric.internal"] == {"10.200.0.5"}
    assert names["web.p3.m1.fabric.internal"] == {"10.200.0.6"}
    # DB and db on one location: their qualified names collide too, so neither is published.
    assert "db.m1.fabric.internal" not in names
    assert set(p.conflicts) == {
        NameConflict("web", ("p2/web@m1", "p3/Web@m1")),
        NameConflict("db", ("default/DB@m1", "default/db@m1")),
        NameConflict("db.m1.fabric.internal", ("default/DB@m1", "default/db@m1")),
    }
    assert all(len(line) == 2 for line in hosts(p))  # nobody got a hostname


def test_a_lone_instance_outside_the_default_project_has_only_its_qualified_name() -> None:
    p = plan(instance("api", on("02:00:00:00:00:01", "10.200.0.5/24"), project="p2"))
    assert set(names_of(p)) == {"api.p2.m1.fabric.internal"}
    assert p.conflicts == ()


def test_standalone_hosts_use_the_host_name_as_location() -> None:
    p = plan(
        instance("c1", on("02:00:00:00:00:01", "10.200.0.5/24"), location="none"),
        cfg=STANDALONE_CONFIG,
        clustered=False,
    )
    assert set(names_of(p)) == {"c1", "c1.fabric.internal", "c1.h7.fabric.internal"}


def test_hostile_names_are_refused_and_the_rest_is_served() -> None:
    hostile = ["bad_name", "c1\ndhcp-range=x", "1234", "-x", "a" * 64, "c 1", "c1,10.0.0.1"]
    records = [
        instance(n, on(f"02:00:00:00:01:0{i}", f"10.200.0.{10 + i}/24")) for i, n in enumerate(hostile)
    ]
    good = instance("ok", on("02:00:00:00:00:01", "10.200.0.5/24"))
    p = plan(
        *records, good, instance("bad-project", on("02:00:00:00:00:02", "10.200.0.6/24"), project="my_proj")
    )
    assert {f"instance default/{n}@m1" for n in hostile} <= {r.subject for r in p.refused}
    assert hosts(p) == [["02:00:00:00:00:01", "10.200.0.5", "ok"], ["02:00:00:00:00:02", "10.200.0.6"]]
    assert set(names_of(p)) == {"ok", "ok.fabric.internal", "ok.m1.fabric.internal"}
    assert (
        Refusal("instance my_proj/bad-project@m1", "project 'my_proj' is not a DNS label: no qualified name")
        in p.refused
    )
    for line in (p.hosts_dns + p.hosts_dhcp).splitlines():
        assert "dhcp-range" not in line and "_" not in line


def test_the_probe_has_a_pool_address_and_its_mac_is_refused_on_an_instance() -> None:
    probe = "02:fd:02:00:00:64"  # 02:fd:02:<VNI>, VNI 100
    p = plan(instance("c1", on(probe)), instance("c2", on("02:FD:01:00:00:64")))
    assert p.hosts_dhcp == f"{probe},10.200.0.199\n"  # only the probe's own line
    assert {r.subject for r in p.refused} == {"nic default/c1@m1/eth0", "nic default/c2@m1/eth0"}
    two_pools = config(
        DHCP.replace("[10.200.0.100-10.200.0.199]", "[10.200.0.10-10.200.0.20, 10.200.0.250-10.200.0.250]")
    )
    assert plan(cfg=two_pools).hosts_dhcp == f"{probe},10.200.0.20\n"  # a one-address pool stays whole
    static = config(DHCP.replace("  ranges: [10.200.0.100-10.200.0.199]\n", ""))
    assert plan(cfg=static).probe is None  # no pool: dnsmasq pings nothing


def test_instance_listed_twice_differently_is_refused() -> None:
    one = instance("c1", on("02:00:00:00:00:01"))
    two = instance("c1", on("02:00:00:00:00:02"))
    p = plan(one, two, one)
    assert p.reservations == () and hosts(p) == []
    assert p.refused == (
        Refusal("instance default/c1@m1", "LXD lists this instance more than once, with different data"),
    )
    assert plan(one, one) == plan(one)


# --- properties -------------------------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def overlay_snapshots(draw: st.DrawFn) -> LXDSnapshot:
    clustered = draw(st.booleans())
    records = draw(st.lists(overlay_instances(clustered), max_size=8))
    noise = draw(st.lists(instances(clustered), max_size=2))  # NICs on other networks
    return LXDSnapshot(
        "m1" if clustered else "none", clustered, ("default", "p2"), (), tuple(records + noise)
    )


def _identity(i: InstanceRecord) -> str:
    return f"{i.project}/{i.name}@{i.location}"


def _expected_holder(group: list[InstanceRecord], clustered: bool) -> str | None:
    default = [i for i in group if i.project == "default"]
    if not default:
        return None
    location = (lambda i: i.location.lower()) if clustered else (lambda i: "m1")
    lowest = min(map(location, default))
    at_lowest = [i for i in default if location(i) == lowest]
    return _identity(at_lowest[0]) if len(at_lowest) == 1 else None


def _bare_names(p: DnsmasqPlan, r: Reservation) -> set[str]:
    """The hostname of a reservation whose instance has no address yet: its bare name, if it holds it."""
    instance = r.nic.rsplit("/", 1)[0]
    holders = {c.holder for c in p.conflicts}
    shared = {c.name for c in p.conflicts if c.holder is None}
    return {r.hostname} if r.hostname and (instance in holders or r.hostname not in shared) else set()


def _members(snap: LXDSnapshot) -> list[InstanceRecord]:
    """The instances the plan must serve: on the overlay, named well, listed once, devices distinct."""
    by_identity: dict[str, set[InstanceRecord]] = defaultdict(set)
    for i in snap.instances:
        if any(on_bridge(n, OVERLAY) for n in i.nics):
            by_identity[_identity(i)].add(dataclasses.replace(i, nics=tuple(sorted(i.nics, key=repr))))
    found = []
    for records in by_identity.values():
        (i,) = records if len(records) == 1 else (None,)
        if i is None or not is_label(i.name.lower()):
            continue
        devices = [n.device for n in i.nics if on_bridge(n, OVERLAY)]
        if len(devices) == len(set(devices)):
            found.append(i)
    return found


@SETTINGS
@given(overlay_snapshots(), st.randoms(use_true_random=False))
def test_plan_properties(snap: LXDSnapshot, rnd: random.Random) -> None:
    p = plan_dnsmasq(snap, CONFIG, interface="fab-dhcp", mtu=1450)
    members = _members(snap)
    served = {_identity(i) for i in members}
    lines = hosts(p)

    # every MAC in at most one dhcp-host line, every line a valid unicast MAC
    macs = [line[0] for line in lines]
    assert len(macs) == len(set(macs))
    assert all(normalize_mac(m)[0] == m for m in macs)
    # a reserved address is in the subnet, outside the pools, and reserved once
    reserved = [ip_address(f) for line in lines for f in line[1:] if f[0].isdigit() and "." in f]
    assert len(reserved) == len(set(reserved))
    assert all(a in SUBNET and not POOL[0] <= a <= POOL[1] for a in reserved)
    # a hostname is given once, and only a name the plan publishes for that same MAC's instance
    hostnames = [f for line in lines for f in line[1:] if not f[0].isdigit()]
    assert len(hostnames) == len(set(hostnames))

    # no name published for two instances; every record belongs to a served instance
    owner: dict[str, str] = {}
    for record in p.records:
        assert record.instance in served
        for name in record.names:
            assert owner.setdefault(name, record.instance) == record.instance, name
    for r in p.reservations:
        if r.hostname is not None:
            assert r.hostname in {n for rec in p.records for n in rec.names} | _bare_names(p, r)
            assert owner.get(r.hostname, r.nic.rsplit("/", 1)[0]) == r.nic.rsplit("/", 1)[0]
    # no address on two lines
    addresses = [line.split()[0] for line in p.hosts_dns.splitlines()]
    assert len(addresses) == len(set(addresses))
    # the texts are the records
    assert p.hosts_dns == "".join(r.line() + "\n" for r in p.records)
    assert p.hosts_dhcp == "".join(r.line() + "\n" for r in (*p.reservations, *filter(None, [p.probe])))

    # every shared name is reported, with every instance that has it, and the bare-name rule holds
    groups: dict[str, list[InstanceRecord]] = defaultdict(list)
    for i in members:
        groups[i.name.lower()].append(i)
    reported = {c.name: c for c in p.conflicts}
    for name, group in groups.items():
        holder = _expected_holder(group, snap.clustered)
        if len(group) > 1:
            assert reported[name] == NameConflict(name, tuple(sorted(map(_identity, group))), holder)
        else:
            assert name not in reported
        published = {rec.instance for rec in p.records if name in rec.names}
        assert published <= ({holder} if holder else set())

    # hostile data refused per instance or NIC, with a reason; the rest still served
    refused = {r.subject for r in p.refused}
    on_overlay = {_identity(i) for i in snap.instances if any(on_bridge(n, OVERLAY) for n in i.nics)}
    for i in snap.instances:
        if _identity(i) not in on_overlay:
            assert not any(_identity(i) in s for s in refused)  # not on the overlay: not ours to judge
        elif _identity(i) not in served:
            assert f"instance {_identity(i)}" in refused
    for i in members:
        for n in i.nics:
            if on_bridge(n, OVERLAY) and normalize_mac(n.hwaddr)[0] is None:
                assert f"nic {_identity(i)}/{n.device}" in refused
    claimed: dict[str, list[tuple[InstanceRecord, NicRecord]]] = defaultdict(list)
    for i in members:
        for n in i.nics:
            mac = normalize_mac(n.hwaddr)[0]
            if on_bridge(n, OVERLAY) and mac is not None:
                claimed[mac].append((i, n))
    for mac, claims in claimed.items():
        if len(claims) == 1 or sum(i.running for i, _ in claims) == 1:
            assert mac in macs  # an instance MAC nobody else claims (or the one running) is served
    for text in (p.hosts_dns, p.hosts_dhcp):
        assert all(line.isprintable() for line in text.splitlines())

    # the same input in any order gives the same plan
    shuffled = [
        InstanceRecord(
            i.project, i.name, i.type, i.status, i.location, tuple(rnd.sample(i.nics, len(i.nics))), i.config
        )
        for i in rnd.sample(snap.instances, len(snap.instances))
    ]
    again = LXDSnapshot(snap.member, snap.clustered, snap.projects, (), tuple(shuffled))
    assert plan_dnsmasq(again, CONFIG, interface="fab-dhcp", mtu=1450) == p
