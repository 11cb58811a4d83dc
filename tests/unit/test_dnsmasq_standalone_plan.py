"""The dnsmasq plan among several standalone hosts: no fixed addresses, and client-sent names only
for clients this host's LXD does not list.

Each authority sees only its own host's LXD, so an address planned on one host would be unknown to
the next authority, which would NAK the renewal; pool addresses survive through dhcp-authoritative.
"""

from __future__ import annotations

import dataclasses
from ipaddress import ip_interface

from hypothesis import given
from hypothesis import strategies as st

from fabricd.authority.dnsmasq_plan import DnsmasqPlan, fixed_addresses, plan_dnsmasq
from fabricd.config import FabricConfig
from fabricd.lxd.nics import on_bridge
from fabricd.lxd.records import LXDSnapshot
from tests.unit.lxd_strategies import OVERLAY, config
from tests.unit.test_dnsmasq_instance_addresses import SMALL, SNAPSHOTS, full_reason, mac, new
from tests.unit.test_dnsmasq_plan import CONFIG, DHCP, SETTINGS, hosts, on, plan

PEERS = (
    "    - {name: m1, address: 192.0.2.11}\n"
    "    - {name: m2, address: 192.0.2.12}\n"
    "    - {name: m3, address: 192.0.2.13}\n"
)


def standalone(dhcp: str, priority: str) -> FabricConfig:
    body = dhcp.replace("  election: lxd-cluster\n", f"  election: standalone\n  priority: [{priority}]\n")
    overlay = "overlay:\n  enabled: true\n"
    return config(body.replace(overlay, overlay + "  peers:\n" + PEERS))


SHARED = standalone(DHCP, "m2, m1, m3")  # three standalone hosts that may serve
ALONE = standalone(DHCP, "m1")  # the only host that may serve: it plans every address itself


def _small(priority: str) -> FabricConfig:
    small = DHCP.replace("10.200.0.1/24", "10.200.0.1/28").replace(
        "10.200.0.100-10.200.0.199", "10.200.0.2-10.200.0.9"
    )
    return standalone(small, priority)


def test_which_configs_plan_fixed_addresses() -> None:
    assert fixed_addresses(CONFIG) and fixed_addresses(ALONE)
    assert not fixed_addresses(SHARED) and not fixed_addresses(_small("m1, m2"))


def test_reservations_carry_no_address_and_names_come_from_reported_addresses() -> None:
    records = (
        new("c1", 1),  # created: no address yet
        new("c2", 2, "Running", "10.200.0.150/24"),  # a pool address
        new("c3", 3, "Running", "10.200.0.7/24"),  # outside the pool: sticky in cluster mode
    )
    p = plan(*records, cfg=SHARED)
    assert hosts(p) == [[mac(1), "c1"], [mac(2), "c2"], [mac(3), "c3"]]
    assert all(r.address is None for r in p.reservations)
    # c1 has no address to publish until it reports one; the others have what they report.
    assert p.hosts_dns == (
        "10.200.0.7 c3.fabric.internal c3 c3.m1.fabric.internal\n"
        "10.200.0.150 c2.fabric.internal c2 c2.m1.fabric.internal\n"
    )
    assert p.refused == ()
    # The same instances in cluster mode: every NIC has an address in its line.
    assert all(len(line) == 3 for line in hosts(plan(*records)))


def test_client_names_are_ignored_only_for_clients_this_host_lists() -> None:
    shared, alone = plan(cfg=SHARED), plan(cfg=ALONE)
    assert "dhcp-ignore-names=tag:known\n" in shared.conf and "\ndhcp-ignore-names\n" not in shared.conf
    assert "\ndhcp-ignore-names\n" in alone.conf and "tag:known" not in alone.conf
    assert shared.conf.replace("dhcp-ignore-names=tag:known\n", "dhcp-ignore-names\n") == alone.conf


def test_a_second_nic_and_a_withheld_name_get_a_line_without_hostname() -> None:
    dual = new("c1", 1)
    dual = dataclasses.replace(dual, nics=(*dual.nics, on(mac(9), device="eth1")))
    other_project = dataclasses.replace(new("c1", 2), project="p2")
    p = plan(dual, other_project, cfg=SHARED)
    # Known, so their own names are ignored too: none of them can claim a name through DHCP.
    assert hosts(p) == [[mac(1), "c1"], [mac(2)], [mac(9)]]


def test_a_full_instance_space_refuses_nothing() -> None:
    records = [new(f"c{i}", i) for i in range(1, 8)]
    assert {r.reason for r in plan(*records, cfg=SMALL).refused} == {full_reason(5)}
    p = plan(*records, cfg=_small("m1, m2"))
    assert p.refused == () and hosts(p) == [[mac(i), f"c{i}"] for i in range(1, 8)]


def _reported(snap: LXDSnapshot) -> dict[str, set[object]]:
    """instance ident -> every address its overlay NICs report."""
    found: dict[str, set[object]] = {}
    for i in snap.instances:
        ident = f"{i.project}/{i.name}@{i.location}"
        for n in i.nics:
            if on_bridge(n, OVERLAY):
                for text in n.addresses:
                    try:
                        found.setdefault(ident, set()).add(ip_interface(text).ip)
                    except ValueError:
                        continue
    return found


def _planned(snap: LXDSnapshot, cfg: FabricConfig) -> DnsmasqPlan:
    return plan_dnsmasq(snap, cfg, interface="fab-dhcp", mtu=1450)


@SETTINGS
@given(SNAPSHOTS, st.sampled_from(((CONFIG, SHARED), (SMALL, None))))
def test_the_shared_plan_is_the_cluster_plan_without_addresses(
    snap: LXDSnapshot, configs: tuple[FabricConfig, FabricConfig | None]
) -> None:
    fixed_cfg, shared_cfg = configs
    shared_cfg = shared_cfg or _small("m1, m2, m3")
    fixed, shared = _planned(snap, fixed_cfg), _planned(snap, shared_cfg)
    # The same lines, MACs and hostnames, none with an address.
    assert shared.reservations == tuple(dataclasses.replace(r, address=None) for r in fixed.reservations)
    assert all(len(line.split(",")) <= 2 for line in shared.hosts_dhcp.splitlines())
    # The same refusals but "instance space full", the same conflicts.
    space_full = {r for r in fixed.refused if "instance space" in r.reason}
    assert set(shared.refused) == set(fixed.refused) - space_full
    assert not any("instance space" in r.reason for r in shared.refused)
    assert shared.conflicts == fixed.conflicts
    # Names for reported addresses only: the cluster plan's records minus planned addresses.
    reported = _reported(snap)
    assert shared.records == tuple(r for r in fixed.records if r.address in reported.get(r.instance, ()))
    assert shared.conf == fixed.conf.replace("dhcp-ignore-names\n", "dhcp-ignore-names=tag:known\n")
