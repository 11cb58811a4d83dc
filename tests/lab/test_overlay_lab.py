"""The overlay lab: three LXD cluster members joined by fabricd's VXLAN bridge over a routed underlay.

Real kernel VXLAN, real LXD instances (busybox) on the profile `overlay`, real nftables. Every check
reads the kernel (FDB, links, counters) or moves real frames; fabricctl is checked against it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fabric_lab import netns, static_address
from fabric_lab.lxd_node import respawn_lxd
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabricd.overlay.manager import COUNTERS_MAX_AGE
from tests.lab.conftest import REPO, agent_pid, fresh_lab, start_agent

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]
_T = TypeVar("_T")

HOSTS = {"h1": "10.99.1.11", "h2": "10.99.2.12", "h3": "10.99.3.13"}
# Instance names are unique machine-wide: LXD daemons of all labs share the cgroup tree.
INSTANCES = {"tova": ("h1", 11), "tovb": ("h2", 12), "tovc": ("h3", 13)}
MOVER = "tovm"
VXLAN = "vx-fabric0"
SERVER_MAC = "02:fd:01:00:00:64"  # the floating DHCP/DNS server of VNI 100
OVERLAY_MTU = 1450


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "overlay.clab.yml", "tov", state_root) as lab:
        h1 = lab.node("h1")
        # LXD wants more than 10 s; set after bootstrap (setting it in the preseed crashes LXD 5.0.2).
        h1.run(["lxc", "config", "set", "cluster.offline_threshold", "11"])
        for name, (host, octet) in INSTANCES.items():
            launch(h1, name, host, octet)
        for name in INSTANCES:
            wait_until(lambda n=name: ping(h1, "tova", address(n, 6), count=1), what=f"IPv6 to {name}")
        yield lab


# ---- helpers -------------------------------------------------------------------------------------


def wait_until(check: Callable[[], _T], timeout: float = 20.0, what: str = "condition") -> _T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def address(name: str, version: int) -> str:
    octet = INSTANCES[name][1] if name in INSTANCES else 99
    return f"192.168.200.{octet}" if version == 4 else f"fd00:100::{octet}"


def launch(h1: NodeRuntime, name: str, host: str, octet: int) -> None:
    h1.run(["lxc", "init", "busybox", name, "--target", host, "-p", "default", "-p", "overlay"],
           input_text="", timeout=120)  # fmt: skip
    h1.run(["lxc", "start", name], timeout=60)
    configure(h1, name, octet)


def configure(h1: NodeRuntime, name: str, octet: int) -> None:
    """Static addresses outside the overlay's DHCP subnet, with the image's DHCP client stopped:
    these tests are about forwarding, not about leases."""

    def in_instance(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return h1.run(["lxc", "exec", name, "--", *argv], check=False)

    assert static_address.stop_dhcp_client(in_instance), f"{name}: no DHCP client to stop"
    static_address.set_static(in_instance, f"{address(name, 4)}/24")
    h1.run(["lxc", "exec", name, "--", "ip", "addr", "add", f"fd00:100::{octet}/64", "dev", "eth0"])


def ping(h1: NodeRuntime, name: str, target: str, count: int = 2, size: int = 56) -> bool:
    argv = ["lxc", "exec", name, "--", "ping", "-c", str(count), "-W", "2", "-s", str(size), target]
    return h1.run(argv, check=False, timeout=30).returncode == 0


def mac_of(h1: NodeRuntime, name: str) -> str:
    return h1.run(["lxc", "config", "get", name, "volatile.eth0.hwaddr"]).stdout.strip().lower()


def fdb(node: NodeRuntime) -> set[tuple[str, str]]:
    """The VXLAN device's self entries with a destination, from the kernel (bridge -j)."""
    entries = json.loads(node.run(["bridge", "-j", "fdb", "show", "dev", VXLAN]).stdout or "[]")
    return {(e["mac"], e["dst"]) for e in entries if "dst" in e and "self" in e.get("flags", [])}


def without_server(entries: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {e for e in entries if e[0] != SERVER_MAC}


def flood(node: NodeRuntime) -> set[str]:
    return {dst for mac, dst in fdb(node) if mac == "00:00:00:00:00:00"}


def status(node: NodeRuntime) -> dict[str, Any]:
    return dict(json.loads(node.fabricctl("status", "--json").stdout))


def link(node: NodeRuntime, name: str) -> dict[str, Any]:
    (found,) = json.loads(node.run(["ip", "-j", "-d", "link", "show", name]).stdout)
    return dict(found)


def probe(node: NodeRuntime, *args: str) -> subprocess.CompletedProcess[str]:
    return node.run([sys.executable, "-m", "tests.lab.overlay_probe", *args], timeout=60)


class Sniffer:
    """An AF_PACKET sniffer in a node, started before frames are sent."""

    def __init__(self, node: NodeRuntime, iface: str, marker: str, seconds: float) -> None:
        argv = node.argv(
            [sys.executable, "-m", "tests.lab.overlay_probe", "sniff", iface, marker, str(seconds)]
        )
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def counts(self) -> dict[str, int]:
        out, _ = self.process.communicate(timeout=60)
        return dict(json.loads(out.strip().splitlines()[-1]))


def stop_agent(lab: Lab, host: str) -> None:
    pid = agent_pid(lab, host)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not netns.alive(pid), timeout=15, what=f"fabricd on {host} to stop")


def member_status(h1: NodeRuntime, member: str) -> str:
    return str(json.loads(h1.run(["lxc", "query", f"/1.0/cluster/members/{member}"]).stdout)["status"])


# ---- tests ---------------------------------------------------------------------------------------


def test_every_host_builds_the_bridge_vxlan_and_flood_list(lab: Lab) -> None:
    for host, underlay in HOSTS.items():
        node = lab.node(host)
        vxlan = link(node, VXLAN)
        data = vxlan["linkinfo"]["info_data"]
        assert (data["id"], data["port"], data["local"], data["learning"]) == (100, 4789, underlay, False)
        assert data["udp_csum"] is False  # zero outer UDP checksum over IPv4 (RFC 7348)
        assert vxlan["master"] == "fabric0"
        assert vxlan["mtu"] == OVERLAY_MTU == link(node, "fabric0")["mtu"]
        others = {a for h, a in HOSTS.items() if h != host}
        assert flood(node) == others
        overlay = status(node)["overlay"]
        assert overlay["state"] == "up" and overlay["mtu"] == OVERLAY_MTU
        assert {f["vtep"] for f in overlay["flood"]} == others
        peers = {p["name"]: (p["address"], p["state"], p["flood"]) for p in status(node)["overlay_peers"]}
        assert peers == {h: (a, "self" if h == host else "up", h != host) for h, a in HOSTS.items()}
        text = node.fabricctl("status").stdout
        assert f"mtu {OVERLAY_MTU}" in text and "flood list: " in text


def test_ping_and_arp_between_instances_on_different_hosts(lab: Lab) -> None:
    h1, h2, h3 = (lab.node(h) for h in HOSTS)
    for target in ("tovb", "tovc"):
        assert ping(h1, "tova", address(target, 4)), target
        assert ping(h1, "tova", address(target, 6)), target
    arp = h1.run(["lxc", "exec", "tova", "--", "cat", "/proc/net/arp"]).stdout
    for target in ("tovb", "tovc"):
        row = next(line.split() for line in arp.splitlines() if line.startswith(address(target, 4) + " "))
        assert row[3] == mac_of(h1, target), arp
    # Unicast to a known instance is never flooded: h3's underlay sees none of tova -> tovb.
    marker = "Z" * 40  # busybox ping -p 5a fills the payload with 'Z'
    on_h2 = Sniffer(h2, "eth1", marker, 4)
    on_h3 = Sniffer(h3, "eth1", marker, 4)
    h1.run(["lxc", "exec", "tova", "--", "ping", "-c", "3", "-s", "120", "-p", "5a", address("tovb", 4)])
    assert on_h2.counts()["any"] >= 6  # 3 requests and 3 replies on h2's underlay
    assert on_h3.counts()["any"] == 0


def test_broadcast_and_multicast_reach_every_host(lab: Lab) -> None:
    h1, h2, h3 = (lab.node(h) for h in HOSTS)
    sniffers = [Sniffer(node, VXLAN, "FLOODTEST", 6) for node in (h2, h3)]
    probe(h1, "frames", "fabric0", "FLOODTEST")
    for sniffer in sniffers:
        counts = sniffer.counts()
        assert counts["bcast"] >= 1 and counts["mcast4"] >= 1 and counts["mcast6"] >= 1, counts
    # IPv6 multicast from an instance: the all-nodes group answers from the other hosts' instances.
    out = h1.run(
        ["lxc", "exec", "tova", "--", "ping", "-6", "-c", "2", "-w", "3", "ff02::1%eth0"], check=False
    )
    for target in ("tovb", "tovc"):
        assert link_local(mac_of(h1, target)) in out.stdout, out.stdout


def link_local(mac: str) -> str:
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    groups = [f"{(eui[i] << 8) | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


def test_known_macs_appear_and_follow_a_move(lab: Lab) -> None:
    h1, h2, h3 = (lab.node(h) for h in HOSTS)
    macs = {name: mac_of(h1, name) for name in INSTANCES}
    holder = status(h1)["authority"]["holder"]
    for host, node in (("h1", h1), ("h2", h2), ("h3", h3)):
        expected = {(macs[n], HOSTS[h]) for n, (h, _) in INSTANCES.items() if h != host}
        entries = fdb(node)
        assert {e for e in entries if e[0] not in ("00:00:00:00:00:00", SERVER_MAC)} == expected, host
        # The DHCP/DNS server's MAC goes straight to the authority's host; there the bridge knows it.
        server = {e for e in entries if e[0] == SERVER_MAC}
        assert server == (set() if host == holder else {(SERVER_MAC, HOSTS[holder])}), host
        assert status(node)["overlay"]["known_macs"] == 2 + (host != holder)

    launch(h1, MOVER, "h3", 99)
    mover = mac_of(h1, MOVER)
    try:
        for node in (h1, h2):
            wait_until(lambda n=node: (mover, HOSTS["h3"]) in fdb(n), what="mover's entry via h3")
        assert not any(m == mover for m, _ in fdb(h3))  # local: the bridge learns it
        h1.run(["lxc", "stop", "--force", MOVER], timeout=60)
        for node in (h1, h2):
            wait_until(lambda n=node: all(m != mover for m, _ in fdb(n)), what="stopped: entry gone")
        h1.run(["lxc", "move", MOVER, "--target", "h2"], timeout=120)
        h1.run(["lxc", "start", MOVER], timeout=60)
        started = time.monotonic()
        for node in (h1, h3):
            wait_until(lambda n=node: (mover, HOSTS["h2"]) in fdb(n), what="mover's entry via h2")
        followed = time.monotonic() - started
        assert not any(m == mover for m, _ in fdb(h2))
        assert mac_of(h1, MOVER) == mover
        configure(h1, MOVER, 99)
        assert ping(h1, "tova", address(MOVER, 4))
        print(f"\nmove h3 -> h2: start returned -> FDB entries follow on h1 and h3 in {followed:.3f}s")
    finally:
        h1.run(["lxc", "delete", "--force", MOVER], check=False, timeout=60)
    for node in (h1, h3):
        wait_until(lambda n=node: all(m != mover for m, _ in fdb(n)), what="deleted: entry gone")


def test_mtu_is_correct_end_to_end(lab: Lab) -> None:
    h1, h2 = lab.node("h1"), lab.node("h2")
    mtu = h1.run(["lxc", "exec", "tova", "--", "cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
    assert int(mtu) == OVERLAY_MTU
    # Host addresses on the bridges for iputils ping (-M do); the instances' busybox ping has no -M.
    added = [
        (h1, "192.168.101.1/24"),
        (h2, "192.168.101.2/24"),
        (h1, "fd00:101::1/64"),
        (h2, "fd00:101::2/64"),
    ]
    for node, prefix in added:
        node.run(["ip", "addr", "add", prefix, "dev", "fabric0", "nodad"])
    try:
        for target, header in (("192.168.101.2", 28), ("fd00:101::2", 48)):
            fits = OVERLAY_MTU - header
            ok = h1.run(["ping", "-c", "2", "-W", "2", "-M", "do", "-s", str(fits), target], check=False)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            too_big = h1.run(
                ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(fits + 1), target], check=False
            )
            assert too_big.returncode != 0
            said = (too_big.stdout + too_big.stderr).lower()
            assert "message too long" in said or f"mtu={OVERLAY_MTU}" in said or "mtu" in said, said
    finally:
        for node, prefix in added:
            node.run(["ip", "addr", "del", prefix, "dev", "fabric0"], check=False)


def test_vxlan_from_a_non_peer_is_dropped(lab: Lab) -> None:
    h1, h2, rogue = lab.node("h1"), lab.node("h2"), lab.node("rogue")
    dropped_before = status(h1)["overlay"]["firewall"]["counters"]["vxlan_dropped"]
    sniffer = Sniffer(h1, VXLAN, "INJECT", 10)  # scapy takes ~2 s to import, per probe
    probe(rogue, "vxlan", HOSTS["h1"], "100", "INJECTROGUE")
    probe(h2, "vxlan", HOSTS["h1"], "100", "INJECTPEERX")
    counts = sniffer.counts()
    # Same packet, same VNI: from a peer it is decapsulated, from the rogue address it never is.
    assert counts["any"] == 3, counts
    # The status re-reads the filter's counters at most every COUNTERS_MAX_AGE seconds.
    deadline = time.monotonic() + COUNTERS_MAX_AGE + 10
    while (dropped := status(h1)["overlay"]["firewall"]["counters"]["vxlan_dropped"]) - dropped_before < 3:
        assert time.monotonic() < deadline, f"vxlan_dropped {dropped_before} -> {dropped}: no drop shown"
        time.sleep(1)
    nft = h1.run(["nft", "-j", "list", "set", "inet", "fabricd_overlay", "peers_v4"]).stdout
    assert set(json.loads(nft)["nftables"][1]["set"]["elem"]) == {HOSTS["h2"], HOSTS["h3"]}


def test_peer_leaving_and_joining_updates_the_flood_lists(lab: Lab) -> None:
    h1, h2, h3 = (lab.node(h) for h in HOSTS)
    lxd_pid = lab.state().nodes["h3"].lxd_pid
    assert lxd_pid is not None
    os.kill(lxd_pid, signal.SIGKILL)  # h3 stops heartbeating; its instances keep running
    try:
        wait_until(lambda: member_status(h1, "h3") == "Offline", timeout=60, what="h3 offline in LXD")
        seen_offline = time.monotonic()
        for node in (h1, h2):
            wait_until(lambda n=node: HOSTS["h3"] not in flood(n), timeout=5, what="h3 out of the flood list")
        left = time.monotonic() - seen_offline
        assert flood(h1) == {HOSTS["h2"]} and flood(h2) == {HOSTS["h1"]}
        # Nothing is sent towards an offline member, MAC entries included; status says why.
        assert not any(dst == HOSTS["h3"] for _, dst in fdb(h1))
        peers = {p["name"]: p for p in status(h1)["overlay_peers"]}
        assert peers["h3"]["state"] == "offline" and not peers["h3"]["flood"]
        refused = status(h1)["overlay"]["refused"]
        assert any("tovc" in r["subject"] and "offline" in r["reason"] for r in refused), refused
    finally:
        state = lab.state()
        state.nodes["h3"].lxd_pid = respawn_lxd(h3)
        state.save()
    wait_until(lambda: member_status(h1, "h3") == "Online", timeout=60, what="h3 online again")
    seen_online = time.monotonic()
    for node in (h1, h2):
        wait_until(lambda n=node: HOSTS["h3"] in flood(n), timeout=5, what="h3 back in the flood list")
    joined = time.monotonic() - seen_online
    print(f"\npeer leaves: LXD says Offline -> out of both flood lists {left:.3f}s; "
          f"Online -> back {joined:.3f}s")  # fmt: skip
    assert left < 1.5 and joined < 1.5  # 0.5 s member poll + one pass; the test's own polls add ~0.2 s
    assert ping(h1, "tova", address("tovc", 4))


def test_fabricd_restart_keeps_traffic_flowing(lab: Lab) -> None:
    h1, h2 = lab.node("h1"), lab.node("h2")
    before = {host: fdb(lab.node(host)) for host in ("h1", "h2")}
    argv = h1.argv(["lxc", "exec", "tova", "--", "ping", "-q", "-i", "0.05", "-w", "8", address("tovb", 4)])
    pinger = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    for host in ("h1", "h2"):
        stop_agent(lab, host)
    node = lab.node("h1")
    # Stopped: the overlay stays (devices and FDB), only the VXLAN filter went with the agent.
    assert fdb(node) == before["h1"]
    assert node.run(["nft", "list", "table", "inet", "fabricd_overlay"], check=False).returncode != 0
    for host in ("h1", "h2"):
        start_agent(lab, host)
    out, _ = pinger.communicate(timeout=30)
    sent, received = (int(x) for x in _ping_counts(out))
    lost = sent - received
    print(f"\nfabricd restart on h1 and h2 during a ping every 50 ms: {sent} sent, {lost} lost")
    assert sent > 100 and lost == 0, out
    wait_until(lambda: status(h1)["overlay"]["state"] == "up", what="overlay up after restart")
    assert status(h1)["overlay"]["last_change"] == []  # adopted as it was: nothing to change
    # The DHCP/DNS authority may have moved while its host's agent was stopped; all else is as it was.
    assert without_server(fdb(h1)) == without_server(before["h1"])
    assert without_server(fdb(h2)) == without_server(before["h2"])
    assert h1.run(["nft", "list", "table", "inet", "fabricd_overlay"]).returncode == 0


def _ping_counts(out: str) -> tuple[str, str]:
    line = next(line for line in out.splitlines() if "packets transmitted" in line)
    words = line.split()
    return words[0], words[3]


def test_start_adopts_and_corrects_an_existing_overlay(lab: Lab) -> None:
    h2 = lab.node("h2")
    stop_agent(lab, "h2")
    # Drift while the agent is away: a wrong MTU, a lost flood entry, someone else's entry, and a
    # stale entry fabricd itself installed earlier (recorded in its state file).
    h2.run(["ip", "link", "set", VXLAN, "mtu", "1300"])
    h2.run(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", VXLAN, "dst", HOSTS["h1"]])
    h2.run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", VXLAN, "dst", "10.99.7.7"])
    h2.run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", VXLAN, "dst", "10.99.8.8"])
    h2.run([sys.executable, "-c", (
        "import json; p = '/run/fabricd/overlay.json'; d = json.load(open(p)); "
        "d['fdb'].append(['00:00:00:00:00:00', '10.99.8.8']); json.dump(d, open(p, 'w'))"
    )])  # fmt: skip
    vxlan_index = link(h2, VXLAN)["ifindex"]
    start_agent(lab, "h2")
    wait_until(lambda: flood(h2) == {HOSTS["h1"], HOSTS["h3"], "10.99.7.7"}, what="flood list corrected")
    assert link(h2, VXLAN)["mtu"] == OVERLAY_MTU
    assert link(h2, VXLAN)["ifindex"] == vxlan_index  # corrected in place, not rebuilt
    h2.run(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", VXLAN, "dst", "10.99.7.7"])
    assert ping(lab.node("h1"), "tova", address("tovb", 4))


def test_drift_while_the_agent_runs_is_repaired_at_its_next_pass(lab: Lab) -> None:
    """An idle pass reads the devices, the FDB and the VXLAN filter back only after the kernel
    announced a change (a link or FDB notification, a new nftables generation): every edit is one."""
    h2 = lab.node("h2")
    wanted = {HOSTS["h1"], HOSTS["h3"]}
    wait_until(lambda: flood(h2) == wanted, what="h2's flood list as LXD has it")
    time.sleep(6)  # at least one idle pass (every 5 s) that found nothing to read
    h2.run(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", VXLAN, "dst", HOSTS["h1"]])
    h2.run(["ip", "link", "set", VXLAN, "mtu", "1300"])
    h2.run(["nft", "delete", "table", "inet", "fabricd_overlay"])
    wait_until(
        lambda: flood(h2) == wanted and link(h2, VXLAN)["mtu"] == OVERLAY_MTU,
        timeout=15,
        what="the flood entry and the MTU repaired by the running agent",
    )
    wait_until(
        lambda: h2.run(["nft", "list", "table", "inet", "fabricd_overlay"], check=False).returncode == 0,
        timeout=15,
        what="the VXLAN filter rebuilt by the running agent",
    )
    assert ping(lab.node("h1"), "tova", address("tovb", 4))


def test_teardown_removes_what_fabricd_made_and_spares_an_adopted_bridge(lab: Lab) -> None:
    h3 = lab.node("h3")
    config = next(n.agent_config for n in lab.topology.nodes if n.name == "h3")
    refused = h3.run(["fabricd", "teardown", "--config", str(config)], check=False)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    stop_agent(lab, "h3")
    assert link(h3, VXLAN)  # the overlay outlives the agent
    done = h3.run(["fabricd", "teardown", "--config", str(config)])
    assert "removed vxlan vx-fabric0" in done.stdout and "removed bridge fabric0" in done.stdout
    names = netns.link_names(h3.netns_name)
    assert VXLAN not in names and "fabric0" not in names
    assert h3.run(["nft", "list", "table", "inet", "fabricd_overlay"], check=False).returncode != 0
    assert "nothing to remove" in h3.run(["fabricd", "teardown", "--config", str(config)]).stdout

    # A bridge someone else made is adopted: used, and left in place by teardown.
    h3.run(["ip", "link", "add", "fabric0", "type", "bridge"])
    start_agent(lab, "h3")
    wait_until(lambda: VXLAN in netns.link_names(h3.netns_name), what="vxlan on the adopted bridge")
    assert link(h3, VXLAN)["master"] == "fabric0" and link(h3, "fabric0")["mtu"] == OVERLAY_MTU
    stop_agent(lab, "h3")
    done = h3.run(["fabricd", "teardown", "--config", str(config)])
    assert "removed vxlan vx-fabric0" in done.stdout and "bridge" not in done.stdout.replace("vx-", "")
    assert "fabric0" in netns.link_names(h3.netns_name)
    h3.run(["ip", "link", "del", "fabric0"])
