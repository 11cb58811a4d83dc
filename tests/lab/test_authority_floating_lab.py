"""The floating server address and the DHCP probe against a real kernel and a real dnsmasq.

Two "hosts", each a namespace with a bridge `fabric0`, joined by a veth (the overlay's stand-in),
a client on host A's bridge, and a namespace for a second DHCP server. Everything is built here,
named `fl-tflt-*`, and removed by name (and its processes by PID) at the end:

    client ── fabric0 (host A) ── x-a ═══ x-b ── fabric0 (host B)
    rogue  ──┘
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS
from scapy.layers.inet6 import ICMPv6ND_NA
from scapy.layers.l2 import ARP, Ether

from fabric_lab import netns
from fabricd.authority.floating import FloatingAddress, FloatingError, FloatingSpec, FloatingState
from fabricd.authority.macs import probe_mac, server_mac
from fabricd.authority.netns_io import ETH_P_ALL, packet_socket
from fabricd.authority.probe import probe, rogue_servers

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]

PREFIX = "fl-tflt-"
HOST_A, HOST_B, CLIENT, ROGUE = (f"{PREFIX}{n}" for n in ("ha", "hb", "cl", "dn"))
VNI = 100
MTU = 1450
SERVER = IPv4Interface("10.200.0.1/24")
SERVER6 = IPv6Interface("fd00:200::1/64")
CLIENT_IP, CLIENT_IP6, ROGUE_IP = "10.200.0.50", "fd00:200::50", "10.200.0.9"
SPEC = FloatingSpec("fabric0", VNI, SERVER, SERVER6)
MAC = server_mac(VNI)


def run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check)


def neighbour_mac(ns: str, address: str) -> str | None:
    entries = json.loads(run(ns, "ip", "-j", "neigh", "show", "to", address).stdout or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def fdb_port(ns: str, mac: str) -> str | None:
    """The bridge port host `ns`'s fabric0 has learned `mac` on."""
    entries = json.loads(run(ns, "bridge", "-j", "fdb", "show", "br", "fabric0").stdout or "[]")
    ports = [e["ifname"] for e in entries if e.get("mac") == mac and "permanent" not in e.get("state", "")]
    return ports[0] if ports else None


def bridge_mac(ns: str) -> str:
    with NetNS(ns, flags=0) as ipr:
        (index,) = ipr.link_lookup(ifname="fabric0")
        return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def build() -> None:
    for name in (HOST_A, HOST_B, CLIENT, ROGUE):
        netns.create(name)
    for host in (HOST_A, HOST_B):
        with NetNS(host, flags=0) as ipr:
            ipr.link("add", ifname="fabric0", kind="bridge")
            (bridge,) = ipr.link_lookup(ifname="fabric0")
            ipr.link("set", index=bridge, mtu=MTU, state="up")
    netns.add_veth(HOST_A, "x-a", HOST_B, "x-b", mtu=MTU)
    netns.add_veth(HOST_A, "c-a", CLIENT, "eth0", mtu=MTU)
    netns.add_veth(HOST_A, "d-a", ROGUE, "eth0", mtu=MTU)
    for host, port in ((HOST_A, "x-a"), (HOST_A, "c-a"), (HOST_A, "d-a"), (HOST_B, "x-b")):
        with NetNS(host, flags=0) as ipr:
            (bridge,) = ipr.link_lookup(ifname="fabric0")
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge)
    for ns, addresses in ((CLIENT, (CLIENT_IP, CLIENT_IP6)), (ROGUE, (ROGUE_IP,))):
        with NetNS(ns, flags=0) as ipr:
            (eth0,) = ipr.link_lookup(ifname="eth0")
            for address in addresses:
                v6 = ":" in address
                flags = {"flags": 0x02} if v6 else {}  # IFA_F_NODAD
                ipr.addr("add", index=eth0, address=address, prefixlen=64 if v6 else 24, **flags)


def tear_down() -> None:
    for name in netns.list_with_prefix(PREFIX):
        netns.stop_pids(netns.pids_in(name), grace=2)
        netns.remove(name)


@pytest.fixture
def lab() -> Iterator[None]:
    tear_down()  # what an aborted earlier run left
    try:
        build()
        yield
    finally:
        tear_down()
        assert netns.list_with_prefix(PREFIX) == []


@dataclass
class Capture:
    """Every frame the client's eth0 sees, from a socket opened before the test acts."""

    frames: list[bytes]
    stop: threading.Event
    thread: threading.Thread

    def arp_replies(self, address: str) -> list[str]:
        found = []
        for frame in self.frames:
            packet = Ether(frame)
            if ARP in packet and packet[ARP].op == 2 and packet[ARP].psrc == address:
                found.append(str(packet[ARP].hwsrc))
        return found

    def announcements(self) -> tuple[list[Any], list[Any]]:
        """(gratuitous ARPs, unsolicited NAs) the server sent."""
        garps, nas = [], []
        for frame in self.frames:
            packet = Ether(frame)
            if packet.src != MAC:
                continue
            if ARP in packet and packet[ARP].psrc == packet[ARP].pdst:
                garps.append(packet[ARP])
            if ICMPv6ND_NA in packet and packet[ICMPv6ND_NA].S == 0:
                nas.append(packet)
        return garps, nas


@contextlib.contextmanager
def capture(ns: str, interface: str) -> Iterator[Capture]:
    sock = packet_socket(interface, ETH_P_ALL, ns)
    sock.settimeout(0.05)
    frames: list[bytes] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                frames.append(sock.recv(65535))

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        yield Capture(frames, stop, thread)
    finally:
        stop.set()
        thread.join()
        sock.close()


def start_dnsmasq(ns: str, interface: str, pool: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A real dnsmasq bound to one lab interface: DHCP only, no DNS, no upstream, nothing else read."""
    log = tmp_path / f"dnsmasq-{ns}.log"
    process = subprocess.Popen(
        [
            "ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
            "--port=0", "--no-resolv", "--no-hosts", f"--interface={interface}", "--bind-interfaces",
            "--except-interface=lo", f"--dhcp-range={pool},255.255.255.0,1h", "--dhcp-authoritative",
            f"--dhcp-leasefile={tmp_path}/leases-{ns}", "--pid-file=", "--user=root", "--group=root",
            "--log-dhcp", f"--log-facility={log}",
        ],
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while "started" not in (log.read_text() if log.exists() else ""):
        assert process.poll() is None, f"dnsmasq in {ns} exited: {log.read_text() if log.exists() else ''}"
        assert time.monotonic() < deadline, "dnsmasq did not start"
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ping(ns: str, address: str, count: int = 1) -> bool:
    return run(ns, "ping", "-c", str(count), "-W", "1", "-i", "0.2", address, check=False).returncode == 0


@pytest.mark.usefixtures("lab")
def test_claim_serves_the_address_with_the_fixed_mac_and_is_idempotent() -> None:
    floating = FloatingAddress(SPEC, netns=HOST_A)
    before = bridge_mac(HOST_A)
    with capture(CLIENT, "eth0") as seen:
        done = floating.claim()
        assert done[0] == "create fd-fabric0/fdp-fabric0" and done[-1].startswith(f"announce {MAC}")
        assert ping(CLIENT, str(SERVER.ip)) and ping(CLIENT, str(SERVER6.ip))
    assert neighbour_mac(CLIENT, str(SERVER.ip)) == MAC
    assert neighbour_mac(CLIENT, str(SERVER6.ip)) == MAC
    # Only the device answers ARP for the server address: the bridge itself stays quiet (arp_ignore).
    assert set(seen.arp_replies(str(SERVER.ip))) == {MAC}
    assert bridge_mac(HOST_A) == before  # the port's high MAC never becomes the bridge's
    assert fdb_port(HOST_A, MAC) == "fdp-fabric0"

    state = floating.read()
    assert state.status() == {
        "present": True,
        "up": True,
        "mac": MAC,
        "addresses": [str(SERVER), str(SERVER6), "fe80::fd:1ff:fe00:64/64"],
        "attached": True,
    }
    assert floating.claim() == ()  # nothing to do, nothing announced

    # Repair: the port taken off the bridge is attached again, and announced.
    with NetNS(HOST_A, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="fdp-fabric0")[0], master=0)
    assert floating.claim()[0] == "attach fdp-fabric0 to fabric0"
    assert ping(CLIENT, str(SERVER.ip))

    assert floating.release() == (
        f"remove address {SERVER}",
        f"remove address {SERVER6}",
        "remove address fe80::fd:1ff:fe00:64/64",
        "delete fd-fabric0",
    )
    assert floating.release() == ()
    assert not ping(CLIENT, str(SERVER.ip))
    assert floating.read().device is None and floating.read().port is None


@pytest.mark.usefixtures("lab")
def test_without_the_bridge_claim_fails_and_release_still_works() -> None:
    floating = FloatingAddress(SPEC, netns=HOST_A)
    floating.claim()
    with NetNS(HOST_A, flags=0) as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname="fabric0")[0])
    with pytest.raises(FloatingError, match="bridge fabric0 does not exist"):
        floating.claim()
    assert floating.release()[-1] == "delete fd-fabric0"
    assert floating.read() == FloatingState(None, None, None)


@pytest.mark.usefixtures("lab")
def test_unsolicited_na_and_gratuitous_arp_reach_the_client() -> None:
    floating = FloatingAddress(SPEC, netns=HOST_A)
    with capture(CLIENT, "eth0") as seen:
        floating.claim()
        time.sleep(0.2)
    garps, nas = seen.announcements()
    assert len(garps) == 3 and all(g.psrc == str(SERVER.ip) and g.hwsrc == MAC for g in garps)
    targets = [str(p[ICMPv6ND_NA].tgt) for p in nas]
    assert targets.count(str(SERVER6.ip)) == 3 and targets.count("fe80::fd:1ff:fe00:64") == 3
    assert all(p[ICMPv6ND_NA].O == 1 and p.dst == "33:33:00:00:00:01" for p in nas)


def ping_replies(ns: str, address: str, seconds: float) -> subprocess.Popen[str]:
    """A fast ping with a timestamp on every reply (`ping -D`), for `seconds`."""
    argv = ["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.005", "-w", str(seconds), address]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def reply_times(process: subprocess.Popen[str]) -> list[float]:
    out, _ = process.communicate(timeout=30)
    return [float(line[1 : line.index("]")]) for line in out.splitlines() if "bytes from" in line]


@pytest.mark.usefixtures("lab")
def test_move_to_the_other_host_follows_the_gratuitous_arp() -> None:
    on_a, on_b = FloatingAddress(SPEC, netns=HOST_A), FloatingAddress(SPEC, netns=HOST_B)
    on_a.claim()
    assert ping(CLIENT, str(SERVER.ip))
    assert fdb_port(HOST_A, MAC) == "fdp-fabric0" and fdb_port(HOST_B, MAC) == "x-b"

    pinger = ping_replies(CLIENT, str(SERVER.ip), 3)
    time.sleep(0.5)
    released_at = time.time()
    on_a.release()
    claimed_at = time.time()
    done = on_b.claim()
    claim_took = time.time() - claimed_at
    replies = reply_times(pinger)
    after = [t for t in replies if t > claimed_at]
    assert done[0] == "create fd-fabric0/fdp-fabric0" and after, replies[-3:]
    first_reply = after[0] - claimed_at
    outage = after[0] - max([t for t in replies if t < released_at], default=released_at)
    print(f"\nclaim() took {claim_took * 1000:.1f} ms; claim → first reply {first_reply * 1000:.1f} ms; "
          f"last reply from A → first from B {outage * 1000:.1f} ms")  # fmt: skip
    assert first_reply < 1.0

    # The client's entry points at the same MAC, and host A's bridge now sends it to host B.
    assert neighbour_mac(CLIENT, str(SERVER.ip)) == MAC
    assert fdb_port(HOST_A, MAC) == "x-a" and fdb_port(HOST_B, MAC) == "fdp-fabric0"
    assert on_a.read().device is None and on_b.read().device is not None


@pytest.mark.usefixtures("lab")
def test_without_the_announcement_the_move_does_not_reach_the_new_host() -> None:
    """What the gratuitous ARP is for: host B's bridge still sends the server MAC back to host A.

    IPv4 only: with IPv6, the device's MLD report for its solicited-node group teaches the bridge too.
    """
    spec = FloatingSpec("fabric0", VNI, SERVER)
    on_a, on_b = FloatingAddress(spec, netns=HOST_A), FloatingAddress(spec, netns=HOST_B)
    on_a.claim()
    assert ping(CLIENT, str(SERVER.ip))
    on_a.release()
    on_b.claim(announce=False)
    assert not ping(CLIENT, str(SERVER.ip))
    assert fdb_port(HOST_B, MAC) == "x-b"
    on_b.announce()
    assert ping(CLIENT, str(SERVER.ip))


@pytest.mark.usefixtures("lab")
def test_probe_lists_every_dhcp_server_and_tells_ours_from_a_rogue(tmp_path: Path) -> None:
    probe_from_b = "fabric0"
    empty = probe(probe_from_b, probe_mac(VNI), timeout=1.0, netns=HOST_B)
    assert empty.error is None and empty.servers == ()
    print(f"\nno server: probe took {empty.duration:.3f} s")

    FloatingAddress(FloatingSpec("fabric0", VNI, SERVER), netns=HOST_A).claim()
    processes = [
        start_dnsmasq(HOST_A, "fd-fabric0", "10.200.0.100,10.200.0.149", tmp_path),  # the authority's
        start_dnsmasq(ROGUE, "eth0", "10.200.0.150,10.200.0.199", tmp_path),
    ]
    try:
        # The first answers come after dnsmasq's 3 s ping check, within the probe's timeout.
        result = probe(probe_from_b, probe_mac(VNI), netns=HOST_B)
        rogue_mac = json.loads(run(ROGUE, "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
        both = {(MAC, str(SERVER.ip), str(SERVER.ip)), (rogue_mac, ROGUE_IP, ROGUE_IP)}
        assert result.error is None
        assert {(s.mac, str(s.server_id), str(s.ip)) for s in result.servers} == both
        (rogue,) = rogue_servers(result, MAC, SERVER.ip)
        assert rogue.mac == rogue_mac and rogue.offered is not None
        assert IPv4Address("10.200.0.150") <= rogue.offered <= IPv4Address("10.200.0.199")
        offers_after = [s.after for s in result.servers]
        print(f"two servers: offers after {offers_after} s, probe took {result.duration} s")

        # From the authority's own host too: its own server's offer comes back through the bridge.
        result = probe("fabric0", probe_mac(VNI), netns=HOST_A)
        assert {(s.mac, str(s.server_id), str(s.ip)) for s in result.servers} == both
        print(f"again, from host A: offers after {[s.after for s in result.servers]} s")

        stop(processes.pop(0))  # ours gone: the rogue alone
        result = probe(probe_from_b, probe_mac(VNI), netns=HOST_B)
        assert [s.mac for s in result.servers] == [rogue_mac]
        assert rogue_servers(result, MAC, SERVER.ip) == result.servers
    finally:
        for process in processes:
            stop(process)
    gone = probe(probe_from_b, probe_mac(VNI), timeout=1.0, netns=HOST_B)
    assert gone.servers == () and gone.error is None


@pytest.mark.usefixtures("lab")
def test_probe_on_a_missing_interface_reports_it() -> None:
    result = probe("fabric9", probe_mac(VNI), timeout=0.2, netns=HOST_A)
    assert result.servers == () and result.error is not None and "fabric9" in result.error


IN_HOST = """
import json, sys, time
from ipaddress import IPv4Interface
from fabricd.authority.floating import FloatingAddress, FloatingSpec
floating = FloatingAddress(FloatingSpec("fabric0", 100, IPv4Interface("10.200.0.1/24")))
start = time.monotonic()
done = floating.claim(announce=False)
netlink = time.monotonic() - start
sent = floating.announce()
print(json.dumps({"done": done, "netlink": netlink, "sent": sent, "status": floating.read().status()}))
"""


@pytest.mark.usefixtures("lab")
def test_claim_in_the_agents_own_namespace() -> None:
    """The agent's way (no namespace named): run inside host A, as fabricd would be."""
    out = run(HOST_A, sys.executable, "-c", IN_HOST)
    report = json.loads(out.stdout)
    assert report["done"][0] == "create fd-fabric0/fdp-fabric0" and report["sent"] == 3
    assert report["status"]["up"] and report["status"]["attached"]
    print(f"\nclaim in the host's own namespace: netlink steps {report['netlink'] * 1000:.1f} ms")
    assert ping(CLIENT, str(SERVER.ip)) and neighbour_mac(CLIENT, str(SERVER.ip)) == MAC
