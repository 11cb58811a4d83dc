"""labs/ovn-cluster.clab.yml: a 2-member LXD cluster with one OVN, fabricd on both members.

The cluster's locality rules end to end: an instance's routes are announced only by the member it
runs on, and follow it when it moves; in active-chassis mode an OVN network's subnet is announced
only by the member whose chassis hosts the network's active gateway, and follows that gateway.
r1's kernel table (and, where the next hop stays the same, its BGP table) is the judge.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_lab import netns, ovn_node
from fabric_lab.fib import routes_to, wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabricd.authority.lease_store import KEEP
from fabricd.lxd.events import ELECTION_ACL
from tests.lab.conftest import REPO, lab_from, processes_mentioning

pytestmark = pytest.mark.lab

MEMBERS = ("m1", "m2")
UNDERLAY = {"m1": ("10.99.1.11", "fd00:99:1::11"), "m2": ("10.99.2.12", "fd00:99:2::12")}
CENTRAL = "10.99.1.11"
# Instance names are unique on the machine, not only in the cluster: LXD daemons of other labs
# share the cgroup tree (lxc.payload.<name>).
MOVER = "tclus-mv1"


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    lab = lab_from(REPO / "labs" / "ovn-cluster.clab.yml", "tclus", state_root)
    lab.down()
    started = time.monotonic()
    lab.up()
    print(f"\novn-cluster lab up: {time.monotonic() - started:.1f} s")
    try:
        yield lab
    finally:
        lab.down()


def status(node: NodeRuntime) -> dict[str, object]:
    result: dict[str, object] = json.loads(node.fabricctl("status", "--json").stdout)
    return result


def route_row(node: NodeRuntime, prefix: str) -> dict[str, object]:
    rows: list[dict[str, object]] = json.loads(node.fabricctl("routes", "--json").stdout)["routes"]
    return next((r for r in rows if r["prefix"] == prefix), {})


def wait_row(
    node: NodeRuntime, prefix: str, state: str, reason: str = "", timeout: float = 15
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    row: dict[str, object] = {}
    while time.monotonic() < deadline:
        row = route_row(node, prefix)
        if row.get("state") == state and reason in str(row.get("reason") or ""):
            return row
        time.sleep(0.2)
    raise AssertionError(f"{node.name}: {prefix} is not {state} ({reason!r}) within {timeout:g}s: {row}")


def wait_sessions(node: NodeRuntime, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    peers: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        peers = list(status(node)["bgp_peers"])  # type: ignore[call-overload]
        if len(peers) == 2 and all(p["state"] == "established" for p in peers):
            return
        time.sleep(0.2)
    raise AssertionError(f"{node.name}: BGP sessions not established: {peers}")


def bgp_speakers(r1: NodeRuntime, prefix: str) -> set[str]:
    """The members (by session address) r1 has a path for the prefix from."""
    family = "ipv6" if ":" in prefix else "ipv4"
    out = r1.run(["vtysh", "-c", f"show bgp {family} unicast {prefix} json"]).stdout
    paths = json.loads(out).get("paths", []) if out.strip() else []
    return {str(p["peer"]["peerId"]) for p in paths}


def wait_speakers(r1: NodeRuntime, prefix: str, speakers: set[str], timeout: float = 20) -> float:
    started = time.monotonic()
    seen: set[str] = set()
    while time.monotonic() - started < timeout:
        seen = bgp_speakers(r1, prefix)
        if seen == speakers:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"r1: {prefix} from {sorted(seen)}, want {sorted(speakers)}")


def test_cluster_forms_and_both_agents_peer_with_r1(lab: Lab) -> None:
    m1 = lab.node("m1")
    listed = m1.run(["lxc", "cluster", "list", "--format", "csv"]).stdout
    states = {row[0]: row[6] for row in csv.reader(listed.splitlines())}
    assert states == {"m1": "ONLINE", "m2": "ONLINE"}, listed
    urls = {row[0]: row[1] for row in csv.reader(listed.splitlines())}
    assert urls == {"m1": "https://10.99.1.11:8443", "m2": "https://10.99.2.12:8443"}
    for name in MEMBERS:
        node = lab.node(name)
        # The joining member runs with the cluster's config (one OVN northbound for all).
        config = node.run(["lxc", "config", "get", "network.ovn.northbound_connection"]).stdout.strip()
        assert config == f"tcp:{CENTRAL}:6641", name
        wait_sessions(node)
        assert {p["address"] for p in status(node)["bgp_peers"]} == {  # type: ignore[attr-defined]
            UNDERLAY[name][0].rsplit(".", 1)[0] + ".1",
            UNDERLAY[name][1].rsplit(":", 1)[0] + ":1",
        }
    # One OVN: both chassis in m1's southbound database, tunnels from each member's underlay address.
    chassis = m1.run(["ovn-sbctl", "--format=csv", "--data=bare", "--no-headings", "--columns=name,hostname",
                      "list", "Chassis"]).stdout  # fmt: skip
    assert sorted(chassis.split()) == ["m1,m1", "m2,m2"]
    encaps = m1.run(["ovn-sbctl", "--bare", "--columns=ip", "list", "Encap"]).stdout.split()
    assert sorted(encaps) == [UNDERLAY["m1"][0], UNDERLAY["m2"][0]]
    # Each chassis has a tunnel to the other's underlay address, sent out of br-phy (userspace datapath).
    for name, other in (("m1", "m2"), ("m2", "m1")):
        node = lab.node(name)
        tunnel = node.run(["ovs-vsctl", "--bare", "--columns=options", "find", "Interface",
                           f"name=ovn-{other}-0"]).stdout  # fmt: skip
        assert f"remote_ip={UNDERLAY[other][0]}" in tunnel.split()
        assert node.run(["ovs-vsctl", "port-to-br", "eth1"]).stdout.strip() == ovn_node.UNDERLAY_BRIDGE


def launch_on(node: NodeRuntime, name: str, member: str, **nic: str) -> None:
    # Empty stdin: lxc init and lxc network create read a config from a stdin that is not a terminal.
    node.run(["lxc", "init", "busybox", name, "--target", member], input_text="", timeout=120)
    node.run(["lxc", "config", "device", "override", name, "eth0", *(f"{k}={v}" for k, v in nic.items())])
    node.run(["lxc", "start", name], timeout=60)


def test_instance_route_follows_the_instance_to_another_member(lab: Lab) -> None:
    m1, m2, r1 = lab.node("m1"), lab.node("m2"), lab.node("r1")
    v4, v6 = "10.201.7.0/24", "fd00:201:7::/64"
    launch_on(m1, MOVER, "m1", **{"ipv4.routes.external": v4, "ipv6.routes.external": v6})
    try:
        wait_for(r1.netns_name, v4, {UNDERLAY["m1"][0]})
        wait_for(r1.netns_name, v6, {UNDERLAY["m1"][1]})
        assert wait_row(m1, v4, "announced")["next_hop"] == UNDERLAY["m1"][0]
        assert f"default/br0/{MOVER}" in str(route_row(m1, v4)["origin"])
        wait_row(m2, v4, "withheld", "instance runs on member m1")

        # No CRIU here, so no live migration: stop, move, start.
        started = time.monotonic()
        m1.run(["lxc", "stop", "--force", MOVER], timeout=60)
        gone = wait_for(r1.netns_name, v4, None)
        stopped = time.monotonic()
        m1.run(["lxc", "move", MOVER, "--target", "m2"], timeout=120)
        moved = time.monotonic()
        m1.run(["lxc", "start", MOVER], timeout=60)
        start_returned = time.monotonic()
        wait_for(r1.netns_name, v4, {UNDERLAY["m2"][0]}, timeout=20)
        arrived = time.monotonic()
        wait_for(r1.netns_name, v6, {UNDERLAY["m2"][1]})
        location = m1.run(["lxc", "list", MOVER, "--format", "csv", "-c", "L"]).stdout.strip()
        assert location == "m2"
        assert wait_row(m2, v4, "announced")["next_hop"] == UNDERLAY["m2"][0]
        wait_row(m1, v4, "withheld", "instance runs on member m2")
        assert routes_to(r1.netns_name, v4) == {UNDERLAY["m2"][0]}  # m1 withdrew; only m2's path left
        print(
            f"\nmove {MOVER} m1 -> m2: stop -> withdrawn at r1 {gone:.2f}s; lxc move {moved - stopped:.2f}s; "
            f"start returned -> route via m2 at r1 {arrived - start_returned:.2f}s; "
            f"whole stop+move+start -> route via m2 {arrived - started:.2f}s"
        )
    finally:
        m1.run(["lxc", "delete", "--force", MOVER], check=False, timeout=60)
    wait_for(r1.netns_name, v4, None)
    wait_for(r1.netns_name, v6, None)


# ---- OVN, active-chassis mode -------------------------------------------------------------------------

OVN_NET = "tclusovn"
OVN_V4, OVN_V6 = "10.211.1.0/24", "fd00:211:1::/64"


def create_ovn_network(m1: NodeRuntime, lab: Lab) -> None:
    m1.run(["lxc", "network", "create", OVN_NET, "--type=ovn", "network=UPLINK", "ipv4.address=10.211.1.1/24",
            "ipv4.nat=false", "ipv6.address=fd00:211:1::1/64", "ipv6.nat=false"],
           input_text="", timeout=60)  # fmt: skip
    for name in MEMBERS:  # each member got its own lxdovnN uplink bridge with the kernel datapath
        ovn_node.set_netdev_datapath(lab.node(name))


def active_chassis(node: NodeRuntime, timeout: float = 15) -> str:
    """GET /1.0/networks/NAME/state's ovn.chassis; LXD answers 500 until a chassis claimed the gateway."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = node.run(["lxc", "query", f"/1.0/networks/{OVN_NET}/state"], check=False)
        if result.returncode == 0:
            return str(json.loads(result.stdout)["ovn"]["chassis"])
        time.sleep(0.2)
    raise AssertionError(f"no active chassis for {OVN_NET}: {result.stderr.strip() if result else ''}")


def ha_chassis_group(m1: NodeRuntime, uplink4: str) -> str:
    """The HA chassis group of the OVN router port that holds the network's uplink address."""
    ports = m1.run(["ovn-nbctl", "--format=csv", "--data=bare", "--no-headings",
                    "--columns=networks,ha_chassis_group", "list", "Logical_Router_Port"]).stdout  # fmt: skip
    groups = [row[1] for row in csv.reader(ports.splitlines()) if f"{uplink4}/" in row[0] and row[1]]
    assert len(groups) == 1, ports
    return m1.run(
        ["ovn-nbctl", "--bare", "--columns=name", "list", "HA_Chassis_Group", groups[0]]
    ).stdout.strip()


def test_ovn_network_created_cluster_wide_is_seen_without_a_later_event(lab: Lab) -> None:
    """LXD 5.0.2 sends no network-created event for a cluster-wide network; fabricd's periodic
    re-listing of networks finds it anyway."""
    m1, m2 = lab.node("m1"), lab.node("m2")
    create_ovn_network(m1, lab)
    try:
        deadline = time.monotonic() + 8  # beyond fabricd's 5 s re-listing of the networks
        while time.monotonic() < deadline:
            if route_row(m1, OVN_V4) and route_row(m2, OVN_V4):
                return
            time.sleep(0.2)
        raise AssertionError(f"neither member lists {OVN_V4} 8 s after the network was created")
    finally:
        m1.run(["lxc", "network", "delete", OVN_NET], check=False, timeout=60)


def test_active_chassis_member_alone_announces_and_the_announcement_follows(lab: Lab) -> None:
    m1, r1 = lab.node("m1"), lab.node("r1")
    create_ovn_network(m1, lab)
    try:
        uplink4 = m1.run(["lxc", "network", "get", OVN_NET, "volatile.network.ipv4.address"]).stdout.strip()
        uplink6 = m1.run(["lxc", "network", "get", OVN_NET, "volatile.network.ipv6.address"]).stdout.strip()
        active = active_chassis(m1)
        assert active in MEMBERS
        other = next(m for m in MEMBERS if m != active)
        wait_for(r1.netns_name, OVN_V4, {uplink4}, timeout=20)
        wait_for(r1.netns_name, OVN_V6, {uplink6}, timeout=20)
        wait_speakers(r1, OVN_V4, {UNDERLAY[active][0]})
        assert wait_row(lab.node(active), OVN_V4, "announced")["next_hop"] == uplink4
        wait_row(lab.node(other), OVN_V4, "withheld", f"active chassis is on member {active}")
        # The next hop forwards: r1 reaches the OVN router through the active chassis.
        assert r1.run(["ping", "-c1", "-W2", "10.211.1.1"], check=False).returncode == 0

        # Move the gateway: the other chassis gets the top priority in the network's HA group.
        group = ha_chassis_group(m1, uplink4)
        started = time.monotonic()
        m1.run(["ovn-nbctl", "ha-chassis-group-add-chassis", group, other, "32767"])
        m1.run(["ovn-nbctl", "ha-chassis-group-add-chassis", group, active, "1"])
        deadline = time.monotonic() + 10
        while active_chassis(m1) != other:
            assert time.monotonic() < deadline, f"active chassis of {OVN_NET} stays on {active}"
            time.sleep(0.05)
        chassis_moved = time.monotonic() - started
        reachable = None  # the data path: r1 reaches the router through the new gateway
        while reachable is None and time.monotonic() < started + 15:
            if r1.run(["ping", "-c1", "-W1", "10.211.1.1"], check=False).returncode == 0:
                reachable = time.monotonic() - started
        assert reachable is not None, "r1 cannot reach the OVN router through the new active chassis"
        wait_speakers(r1, OVN_V4, {UNDERLAY[other][0]}, timeout=20)
        followed = time.monotonic() - started
        wait_speakers(r1, OVN_V6, {UNDERLAY[other][1]}, timeout=10)
        wait_row(lab.node(other), OVN_V4, "announced")
        wait_row(lab.node(active), OVN_V4, "withheld", f"active chassis is on member {other}")
        assert routes_to(r1.netns_name, OVN_V4) == {uplink4}  # the next hop stays: one L2 uplink
        print(
            f"\nactive chassis {active} -> {other}: /state shows it after {chassis_moved:.2f}s; r1 reaches "
            f"the router again after {reachable:.2f}s; r1 has the route only from {other} after "
            f"{followed:.2f}s (fabricd re-reads OVN state every 5 s)"
        )
    finally:
        m1.run(["lxc", "network", "delete", OVN_NET], check=False, timeout=60)
    wait_for(r1.netns_name, OVN_V4, None)


# --- the DHCP/DNS authority's election on the cluster's database ------------------------------------

ELECTION_DRIVER = Path(__file__).with_name("election_driver.py")
TTL, MARGIN = 2.0, 0.5  # the elector's defaults (fabricd.authority.election.ElectionTimers)


def elector_lines(node: NodeRuntime, log: str) -> list[dict[str, object]]:
    path = node.log_file(log)
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start_elector(node: NodeRuntime, log: str) -> int:
    node.log_file(log).unlink(missing_ok=True)
    return node.spawn([sys.executable, str(ELECTION_DRIVER), "/var/lib/lxd/unix.socket", node.name], log)


def serving_now(node: NodeRuntime, log: str) -> bool:
    lines = elector_lines(node, log)
    return bool(lines) and bool(lines[-1]["serving"])


def wait_one_server(lab: Lab, logs: dict[str, str], pids: dict[str, int], timeout: float = 15) -> str:
    """The one live elector that serves (a killed one's last line no longer counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        serving = [m for m in MEMBERS if netns.alive(pids[m]) and serving_now(lab.node(m), logs[m])]
        assert len(serving) <= 1, serving
        if serving:
            return serving[0]
        time.sleep(0.05)
    raise AssertionError("no elector became the authority")


def test_election_one_authority_fails_over_within_ttl_and_hands_over_cleanly(lab: Lab) -> None:
    logs = {m: f"elector-{m}" for m in MEMBERS}
    pids = {m: start_elector(lab.node(m), logs[m]) for m in MEMBERS}
    try:
        holder = wait_one_server(lab, logs, pids)
        standby = next(m for m in MEMBERS if m != holder)
        # Renewals every 0.5 s must not make the agents resync: the ACL's events are ignored.
        before = {m: int(status(lab.node(m))["reconcile"]["passes"]) for m in MEMBERS}  # type: ignore[index]
        time.sleep(5.0)
        after = {m: int(status(lab.node(m))["reconcile"]["passes"]) for m in MEMBERS}  # type: ignore[index]
        assert all(after[m] - before[m] <= 4 for m in MEMBERS), (before, after)  # interval 5 s, plus slack
        acls = json.loads(lab.node("m1").run(["lxc", "query", "/1.0/network-acls?recursion=1"]).stdout)
        chain = [a for a in acls if a["name"].startswith(ELECTION_ACL)]
        assert 1 <= len(chain) <= KEEP + 1, [a["name"] for a in acls]  # each writer prunes the chain
        assert all(a["used_by"] in ([], None) for a in chain)  # attached to nothing
        # The holder dies without a word (SIGKILL): the standby takes over after one ttl of silence.
        last_renewal = max(
            float(line["renewed"] or 0) for line in elector_lines(lab.node(holder), logs[holder])
        )
        killed_at = time.time()
        os.kill(pids[holder], signal.SIGKILL)
        while netns.alive(pids[holder]):  # SIGKILL lands a moment after kill() returns
            time.sleep(0.005)
        new_holder = wait_one_server(lab, logs, pids, timeout=10)
        assert new_holder == standby, {m: elector_lines(lab.node(m), logs[m])[-4:] for m in MEMBERS}
        took_over = next(
            float(line["t"]) for line in elector_lines(lab.node(standby), logs[standby]) if line["serving"]
        )
        gap = took_over - killed_at
        assert took_over >= last_renewal + TTL - MARGIN  # the dead holder had fenced itself by then
        assert gap <= TTL + 1.0, gap
        # A clean stop releases the lease: the other side takes over at its next read.
        pids[holder] = start_elector(lab.node(holder), logs[holder])
        time.sleep(1.0)
        assert not serving_now(lab.node(holder), logs[holder])  # the restarted one is a standby
        stopped_at = time.time()
        os.kill(pids[standby], signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not serving_now(lab.node(holder), logs[holder]):
            assert time.monotonic() < deadline, "no handover after a clean stop"
            time.sleep(0.02)
        handover = (
            next(
                float(line["t"])
                for line in reversed(elector_lines(lab.node(holder), logs[holder]))
                if line["serving"]
            )
            - stopped_at
        )
        assert handover <= 1.0, handover
        print(f"\nelection: failover {gap:.2f} s after SIGKILL, clean handover {handover:.2f} s")
    finally:
        for pid in pids.values():
            if netns.alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_down_leaves_nothing(lab: Lab) -> None:
    state = lab.state()
    recorded = [p for n in state.nodes.values() for p in (n.holder_pid, n.lxd_pid, n.agent_pid) if p]
    started = time.monotonic()
    lab.down()
    print(f"\novn-cluster lab down: {time.monotonic() - started:.1f} s")
    assert netns.list_with_prefix("fl-tclus-") == []
    assert [p for p in recorded if netns.alive(p)] == []
    assert processes_mentioning(str(lab.state_dir)) == []
    assert not list(Path("/sys/fs/cgroup").glob(f"*/lxc.payload.{MOVER}"))
    assert lab.down() == []
