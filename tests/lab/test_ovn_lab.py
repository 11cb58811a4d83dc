"""labs/ovn-bgp.clab.yml: OVN inside each LXD host, its networks reachable over the shared uplink segment.

Each host runs its own OVS (userspace datapath) + OVN; an OVN network's router takes an uplink address
on the segment r1 shares with the hosts, which is the next hop fabricd announces. Kept in its own
module: the last test takes the lab down and checks nothing is left.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_lab import netns, ovn_node
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabric_lab.state import LabState
from tests.lab.conftest import REPO, assert_nothing_left, lab_from

pytestmark = pytest.mark.lab

HOSTS = ("h1", "h2")
OVN_RANGE_H1 = (ipaddress.ip_address("10.98.0.100"), ipaddress.ip_address("10.98.0.109"))
ADDRESS_TIMEOUT = 20.0

# Runs on r1: no DHCP server and no router advertisement may answer on the shared segment; an ARP
# request to h1's UPLINK address shows the sniffer does see replies from the segment.
SEGMENT_PROBE = """
import json, os, threading, time
from scapy.all import ARP, BOOTP, DHCP, ICMPv6ND_RA, ICMPv6ND_RS, IP, UDP, AsyncSniffer, Ether, IPv6
from scapy.all import conf, get_if_hwaddr, mac2str, sendp
conf.verb = 0
iface = "eth3"
mac = get_if_hwaddr(iface)
seen = {"arp": False, "dhcp": False, "ra": False}
def note(p):
    if ARP in p and p[ARP].op == 2 and p[ARP].psrc == "10.98.0.11":
        seen["arp"] = True
    if UDP in p and p[UDP].sport in (67, 547):
        seen["dhcp"] = True
    if ICMPv6ND_RA in p:
        seen["ra"] = True
ready = threading.Event()
sniffer = AsyncSniffer(iface=iface, prn=note, store=False, started_callback=ready.set)
sniffer.start()
ready.wait(10)
bcast = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
discover = bcast / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
discover /= BOOTP(chaddr=mac2str(mac), xid=int.from_bytes(os.urandom(4), "big"), flags=0x8000)
discover /= DHCP(options=[("message-type", "discover"), "end"])
solicit = Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src="::", dst="ff02::2", hlim=255) / ICMPv6ND_RS()
for _ in range(3):
    sendp(bcast / ARP(hwsrc=mac, psrc="10.98.0.1", pdst="10.98.0.11"), iface=iface)
    sendp(discover, iface=iface)
    sendp(solicit, iface=iface)
    time.sleep(1)
time.sleep(2)
sniffer.stop()
print(json.dumps(seen))
"""


def recorded_pids(state: LabState) -> list[int]:
    pids: list[int] = []
    for node in state.nodes.values():
        pids += [p for p in (node.holder_pid, node.lxd_pid, node.agent_pid) if p]
        pids += [int(Path(f).read_text().split()[0]) for f in node.pid_files if Path(f).exists()]
    return pids


@pytest.fixture(scope="module")
def ovn_lab(lab_host: None, state_root: Path) -> Iterator[tuple[Lab, list[int]]]:
    lab = lab_from(REPO / "labs" / "ovn-bgp.clab.yml", "tovn", state_root)
    lab.down()
    started = time.monotonic()
    state = lab.up()
    print(f"\novn-bgp lab up: {time.monotonic() - started:.1f} s")
    try:
        yield lab, recorded_pids(state)
    finally:
        lab.down()


def ovs(node: NodeRuntime, *args: str) -> str:
    return node.run(["ovs-vsctl", "--timeout=10", *args]).stdout.strip().strip('"')


@pytest.mark.parametrize("host", HOSTS)
def test_each_host_runs_its_own_ovn_chassis(ovn_lab: tuple[Lab, list[int]], host: str) -> None:
    lab, _ = ovn_lab
    node = lab.node(host)
    assert ovs(node, "get", "Open_vSwitch", ".", "external-ids:hostname") == host
    assert ovs(node, "get", "Open_vSwitch", ".", "external-ids:system-id") == host
    assert ovs(node, "get", "Bridge", ovn_node.INTEGRATION_BRIDGE, "datapath_type") == "netdev"
    chassis = node.run(["ovn-sbctl", "--bare", "--columns=hostname", "list", "Chassis"]).stdout.split()
    assert chassis == [host]  # one chassis per host: each host is its own OVN deployment
    northbound = node.run(["lxc", "config", "get", "network.ovn.northbound_connection"]).stdout.strip()
    assert northbound == f"unix:{ovn_node.NB_SOCKET}"
    # Every daemon recorded, alive and inside the node's namespace; its state in the node's directory.
    pid_files = [Path(f) for f in lab.state().nodes[host].pid_files if "/run/o" in f]
    assert len(pid_files) == len(ovn_node.DAEMONS)
    in_node = set(netns.pids_in(node.netns_name))
    for pid_file in pid_files:
        pid = int(pid_file.read_text().split()[0])
        assert netns.alive(pid) and pid in in_node, pid_file
    assert (node.directory / "etc-openvswitch" / "conf.db").exists()
    assert (node.directory / "var-lib-ovn" / "ovnnb_db.db").exists()
    assert (node.run_dir / "openvswitch" / "db.sock").exists()


def test_no_dhcp_or_router_advertisement_on_the_uplink_segment(ovn_lab: tuple[Lab, list[int]]) -> None:
    lab, _ = ovn_lab
    seen = json.loads(lab.node("r1").run([sys.executable, "-c", SEGMENT_PROBE], timeout=60).stdout)
    assert seen == {"arp": True, "dhcp": False, "ra": False}
    for name in ("r1", *HOSTS):
        assert lab.node(name).run(["ip", "-6", "route", "show", "default"]).stdout.strip() == ""


def _wait_for_address(node: NodeRuntime, instance: str, prefix: str) -> str:
    deadline = time.monotonic() + ADDRESS_TIMEOUT
    line = ""
    while time.monotonic() < deadline:
        line = node.run(["lxc", "list", instance, "--format", "csv", "-c", "4"]).stdout
        for part in line.replace('"', "").split("\n"):
            address = part.split(" ", 1)[0]
            if address.startswith(prefix):
                return address
        time.sleep(0.2)
    raise AssertionError(f"{instance} got no address in {prefix}* within {ADDRESS_TIMEOUT:g}s: {line!r}")


def test_ovn_network_is_reachable_through_its_uplink_address(ovn_lab: tuple[Lab, list[int]]) -> None:
    lab, _ = ovn_lab
    h1, r1 = lab.node("h1"), lab.node("r1")
    started = time.monotonic()
    try:
        h1.run(
            ["lxc", "network", "create", "ovn1", "--type=ovn", "network=UPLINK", "ipv4.address=10.211.1.1/24",
             "ipv4.nat=false", "ipv6.address=fd00:211:1::1/64", "ipv6.nat=false"],
            timeout=60,
        )  # fmt: skip
        fixed = ovn_node.set_netdev_datapath(h1)
        assert [b for b in fixed if b.startswith("lxdovn")], fixed  # LXD's uplink bridge needed it
        assert ovn_node.set_netdev_datapath(h1) == []
        assert "error:" not in ovs(h1, "show")
        h1.run(["lxc", "launch", "busybox", "tovn1", "--network", "ovn1"], timeout=120)
        address = _wait_for_address(h1, "tovn1", "10.211.1.")
        print(f"\nOVN network create -> instance address: {time.monotonic() - started:.1f} s ({address})")

        config = json.loads(h1.run(["lxc", "query", "/1.0/networks/ovn1"]).stdout)["config"]
        uplink = config["volatile.network.ipv4.address"]
        assert OVN_RANGE_H1[0] <= ipaddress.ip_address(uplink) <= OVN_RANGE_H1[1], uplink
        state = json.loads(h1.run(["lxc", "query", "/1.0/networks/ovn1/state"]).stdout)
        assert state["ovn"]["chassis"] == "h1"
        assert r1.run(["ping", "-c1", "-W2", uplink], check=False).returncode == 0
        uplink6 = config.get("volatile.network.ipv6.address")
        assert uplink6 and r1.run(["ping", "-6", "-c1", "-W2", uplink6], check=False).returncode == 0

        # The next hop fabricd announces forwards: r1 reaches the instance through it.
        r1.run(["ip", "route", "add", "10.211.1.0/24", "via", uplink])
        try:
            assert r1.run(["ping", "-c1", "-W2", address], check=False).returncode == 0
        finally:
            r1.run(["ip", "route", "del", "10.211.1.0/24", "via", uplink], check=False)
    finally:
        h1.run(["lxc", "delete", "--force", "tovn1"], check=False, timeout=60)
        h1.run(["lxc", "network", "delete", "ovn1"], check=False, timeout=60)
    assert "ovn1" not in h1.run(["lxc", "network", "list", "--format", "csv"]).stdout


def test_down_stops_ovn_and_leaves_nothing(ovn_lab: tuple[Lab, list[int]]) -> None:
    lab, recorded = ovn_lab
    assert len(recorded) >= 4 + 2 + 2 + 4 + 2 * len(ovn_node.DAEMONS)  # holders, LXD, agents, FRR, OVS/OVN
    assert all(netns.alive(p) for p in recorded)
    started = time.monotonic()
    lab.down()
    print(f"\novn-bgp lab down: {time.monotonic() - started:.1f} s")
    assert_nothing_left(lab, recorded, ran_lxd=True, instances=("tovn1",))
    assert lab.down() == []
