"""Real dnsmasq serving a bridge in a namespace of its own, planned from LXD records, for real DHCP
clients (busybox udhcpc) in two client namespaces. No LXD: the planner gets built records.

    server ns:  fabric0 (bridge) ── fab-dhcp-br ═ fab-dhcp  10.200.0.1/24, fd00:200::1/64 (dnsmasq)
                         ├──────── cli-br ═══════ eth0 in the client ns   (a known instance MAC)
                         └──────── dyn-br ═══════ eth0 in the dynamic ns  (a MAC LXD does not know)

Checked: the reserved address goes to the known MAC with hostname and MTU; an unknown MAC gets a
pool address; names resolve forward and reverse, with a duplicate name's rule; a hosts change is
a SIGHUP (same dnsmasq) after which the old lease renews and the new name resolves; a config
change restarts dnsmasq and the lease still renews; IPv6 router advertisements give SLAAC; and
dnsmasq dies when its parent is SIGKILLed. Timings are printed (pytest -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fabric_lab.lxd_builders import config, instance, snapshot
from fabric_lab.netns import alive
from fabricd.authority.dnsmasq import read_leases
from fabricd.authority.dnsmasq_plan import DnsmasqPlan, plan_dnsmasq
from fabricd.authority.macs import probe_mac
from fabricd.authority.probe import probe
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord, NicRecord

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("dnsmasq_driver.py")
PREFIX = f"fl-tdns-{os.getpid()}"
SERVER, CLIENT, DYNAMIC = f"{PREFIX}-srv", f"{PREFIX}-cli", f"{PREFIX}-dyn"
STATE = Path(f"/run/{PREFIX}")
SERVER_IP = "10.200.0.1"
KNOWN_MAC, DYNAMIC_MAC = "02:aa:00:00:00:05", "02:bb:00:00:00:09"
_T = TypeVar("_T")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check).stdout


def until(check: Callable[[], _T], timeout: float, what: str) -> _T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def remove_namespace(name: str) -> None:
    """Kill what runs in it, by PID, then delete it and its /etc/netns files."""
    pids = sh("ip", "netns", "pids", name, check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", name, check=False)
    shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def add_namespace(name: str) -> None:
    sh("ip", "netns", "add", name)
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # nothing resolves outside the lab
    sh("ip", "-n", name, "link", "set", "lo", "up")


@dataclass
class Lab:
    busybox: Path
    script: Path
    events: Path  # a directory: one file of udhcpc events per namespace

    def client_events(self, ns: str) -> list[dict[str, str]]:
        path = self.events / f"{ns}.events"
        found = []
        for line in path.read_text().splitlines() if path.exists() else []:
            event, *pairs = line.split()
            found.append({"event": event} | dict(p.split("=", 1) for p in pairs if "=" in p))
        return found

    def nslookup(self, ns: str, query: str, kind: str = "") -> str:
        argv = ["ip", "netns", "exec", ns, str(self.busybox), "nslookup"]
        if kind:
            argv.append(f"-type={kind}")
        return sh(*argv, query, SERVER_IP, check=False)

    def udhcpc(self, ns: str, *extra: str) -> subprocess.Popen[bytes]:
        argv = ["ip", "netns", "exec", ns, "env", f"NETNS={ns}", str(self.busybox), "udhcpc", "-i", "eth0"]
        argv += ["-f", "-t", "10", "-T", "1", "-O", "mtu", "-s", str(self.script), *extra]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    debs = sorted((REPO / ".lab" / ".cache").glob("busybox-static_*.deb"))
    if not debs:
        pytest.fail("no busybox-static package in .lab/.cache (run scripts/setup.sh)")
    sh("dpkg-deb", "-x", str(debs[-1]), str(tmp_path / "bb"))
    busybox = tmp_path / "bb" / "bin" / "busybox"
    events = tmp_path / "events"
    events.mkdir()
    script = tmp_path / "udhcpc.script"
    # udhcpc's own script: configure the address, record the event. Never touches /etc/resolv.conf.
    script.write_text(
        f"""#!/bin/sh
BB={busybox}
case "$1" in
  bound|renew) $BB ip addr replace "$ip/$mask" dev "$interface" ;;
  deconfig) $BB ip -4 addr flush dev "$interface" ;;
esac
echo "$1 ip=$ip mtu=$mtu hostname=$hostname dns=$dns domain=$domain router=$router serverid=$serverid" \\
  >> {events}/$NETNS.events
"""
    )
    script.chmod(0o755)
    try:
        for ns in (SERVER, CLIENT, DYNAMIC):
            remove_namespace(ns)
            add_namespace(ns)
        STATE.mkdir(mode=0o750)
        ip = ("ip", "-n", SERVER)
        sh(*ip, "link", "add", "fabric0", "type", "bridge")
        sh(*ip, "link", "set", "fabric0", "up")
        sh(*ip, "link", "add", "fab-dhcp", "type", "veth", "peer", "name", "fab-dhcp-br")
        sh(*ip, "link", "set", "fab-dhcp-br", "master", "fabric0", "up")
        sh(*ip, "addr", "add", f"{SERVER_IP}/24", "dev", "fab-dhcp")
        sh(*ip, "addr", "add", "fd00:200::1/64", "dev", "fab-dhcp", "nodad")
        sh(*ip, "link", "set", "fab-dhcp", "up")
        for port, ns, mac in (("cli-br", CLIENT, KNOWN_MAC), ("dyn-br", DYNAMIC, DYNAMIC_MAC)):
            sh(*ip, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(*ip, "link", "set", port, "master", "fabric0", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        yield Lab(busybox, script, events)
    finally:
        for ns in (SERVER, CLIENT, DYNAMIC):
            remove_namespace(ns)
        shutil.rmtree(STATE, ignore_errors=True)


CONFIG = config(
    f"""overlay:
  enabled: true
dhcp:
  enabled: true
  server_address: {SERVER_IP}/24
  ranges: [10.200.0.100-10.200.0.199]
  lease_time: 600
  ipv6_ra: true
  election: lxd-cluster
daemon:
  state_dir: {STATE}
"""
)


def on_overlay(mac: str, *addresses: str) -> NicRecord:
    return NicRecord("eth0", FrozenMap({"nictype": "bridged", "parent": "fabric0"}), mac, addresses=addresses)


def planned(*records: InstanceRecord, mtu: int = 1450) -> DnsmasqPlan:
    return plan_dnsmasq(snapshot(*records), CONFIG, interface="fab-dhcp", mtu=mtu)


class Driver:
    def __init__(self) -> None:
        self.log = open(STATE / "driver.log", "ab")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", SERVER, sys.executable, str(DRIVER), str(STATE / "dnsmasq"), SERVER_IP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the driver died; see {STATE / 'driver.log'}:\n{(STATE / 'driver.log').read_text()}"
        return dict(json.loads(line))

    def serve(self, plan: DnsmasqPlan, name: str, address: str) -> dict[str, Any]:
        files = {"conf": plan.conf, "hosts_dhcp": plan.hosts_dhcp, "hosts_dns": plan.hosts_dns}
        return self.send({"plan": files, "expect": [name, address]})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def test_dnsmasq_serves_reloads_restarts_and_dies_with_its_parent(lab: Lab) -> None:
    c1 = instance("c1", on_overlay(KNOWN_MAC, "10.200.0.5/24", "fd00:200::5/64"))
    twin = instance("c1", on_overlay("02:aa:00:00:00:06", "10.200.0.6/24"), project="p2", location="m2")
    web = instance("web", on_overlay("02:aa:00:00:00:07", "10.200.0.7/24"), location="m2")
    first = planned(c1, twin, web)
    assert [c.holder for c in first.conflicts] == ["default/c1@m1"]
    timings: dict[str, float] = {}
    driver = Driver()
    clients: list[subprocess.Popen[bytes]] = []
    try:
        started = driver.serve(first, "c1.fabric.internal", "10.200.0.5")
        assert started["action"] == "started"
        dnsmasq = started["pid"]
        timings["start: serve() → first DNS answer"] = started["serve_s"] + started["resolves_s"]
        assert alive(dnsmasq) and f"net:[{os.stat(f'/run/netns/{SERVER}').st_ino}]" == os.readlink(
            f"/proc/{dnsmasq}/ns/net"
        )  # in the server's namespace, nowhere else
        status = Path(f"/proc/{dnsmasq}/status").read_text()
        assert (
            "Uid:\t65534\t65534\t65534\t65534" in status and "NoNewPrivs:\t1" in status
        )  # nobody, via setpriv

        # The known MAC: its reserved address, hostname, MTU, the server as DNS, no router.
        for ns in (CLIENT, DYNAMIC):
            sh("ip", "-n", ns, "link", "set", "eth0", "up")  # after dnsmasq: its RS gets an RA
        t0 = time.monotonic()
        clients.append(lab.udhcpc(CLIENT, "-x", "hostname:spoofed"))  # client names are ignored
        bound = until(lambda: [e for e in lab.client_events(CLIENT) if e["event"] == "bound"], 15, "a lease")
        timings["reserved lease (DISCOVER → ACK)"] = time.monotonic() - t0
        assert bound[0] == {
            "event": "bound",
            "ip": "10.200.0.5",
            "mtu": "1450",
            "hostname": "c1",
            "dns": SERVER_IP,
            "domain": "fabric.internal",
            "router": "",
            "serverid": SERVER_IP,
        }

        # An unknown MAC: an address from the pool, after the ping check.
        t0 = time.monotonic()
        clients.append(lab.udhcpc(DYNAMIC, "-q"))
        dynamic = until(
            lambda: [e for e in lab.client_events(DYNAMIC) if e["event"] == "bound"], 20, "a lease"
        )
        timings["dynamic lease, ping check included"] = time.monotonic() - t0
        assert 100 <= int(dynamic[0]["ip"].rsplit(".", 1)[1]) <= 199 and dynamic[0]["mtu"] == "1450"

        # Names, forward and reverse; the duplicate's qualified name; no name for the spoofed one.
        assert "Address: 10.200.0.5" in lab.nslookup(CLIENT, "c1.fabric.internal")
        assert "Address: 10.200.0.5" in lab.nslookup(CLIENT, "c1")
        assert "Address: 10.200.0.5" in lab.nslookup(CLIENT, "c1.m1.fabric.internal")
        assert "Address: 10.200.0.6" in lab.nslookup(CLIENT, "c1.p2.m2.fabric.internal")
        assert "name = c1.fabric.internal" in lab.nslookup(CLIENT, "10.200.0.5")
        assert "name = c1.p2.m2.fabric.internal" in lab.nslookup(CLIENT, "10.200.0.6")

        # The probe standalone hosts elect by: this server names its host in option 224.
        seen = probe("eth0", probe_mac(CONFIG.overlay.vni), netns=DYNAMIC)
        assert seen.error is None
        assert [(s.host, str(s.server_id)) for s in seen.servers] == [("m1", SERVER_IP)]
        assert "Address: fd00:200::5" in lab.nslookup(CLIENT, "c1.fabric.internal", "AAAA")
        assert "NXDOMAIN" in lab.nslookup(CLIENT, "spoofed.fabric.internal")
        assert "Address: 10.200.0.7" in lab.nslookup(CLIENT, "web.fabric.internal")  # alone: bare name
        assert "Address: 10.200.0.7" in lab.nslookup(CLIENT, "web.m2.fabric.internal")

        # IPv6: the client configured itself from the router advertisement.
        slaac = until(
            lambda: "inet6 fd00:200::" in sh("ip", "-n", CLIENT, "-6", "addr", "show", "dev", "eth0"),
            15,
            "SLAAC",
        )
        assert slaac

        # Hosts change: SIGHUP, the same dnsmasq, the lease renews, the new name resolves.
        db = instance("db", on_overlay("02:aa:00:00:00:08", "10.200.0.8/24"))
        reloaded = driver.serve(planned(c1, twin, web, db), "db.fabric.internal", "10.200.0.8")
        assert reloaded["action"] == "reloaded" and reloaded["pid"] == dnsmasq and reloaded["starts"] == 1
        timings["reload: serve() → new name answers"] = reloaded["serve_s"] + reloaded["resolves_s"]
        leases = read_leases(STATE / "dnsmasq" / "leases")
        assert (KNOWN_MAC, "10.200.0.5") in {(lease.mac, str(lease.address)) for lease in leases.leases}
        renewed = renew(lab, clients[0])
        assert renewed["ip"] == "10.200.0.5"
        assert "Address: 10.200.0.5" in lab.nslookup(CLIENT, "c1.fabric.internal")

        # Config change (the MTU): a new dnsmasq; the lease renews and carries the new MTU.
        restarted = driver.serve(planned(c1, twin, web, db, mtu=1400), "c1.fabric.internal", "10.200.0.5")
        assert restarted["action"] == "restarted" and restarted["pid"] != dnsmasq and not alive(dnsmasq)
        timings["restart: serve() → first DNS answer"] = restarted["serve_s"] + restarted["resolves_s"]
        dnsmasq = restarted["pid"]
        renewed = renew(lab, clients[0])
        assert renewed["ip"] == "10.200.0.5" and renewed["mtu"] == "1400"

        # The parent SIGKILLed: dnsmasq goes too.
        os.kill(driver.proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        until(lambda: not alive(dnsmasq), 5, "dnsmasq to die with its parent")
        timings["parent SIGKILL → dnsmasq gone"] = time.monotonic() - t0
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
            client.wait()
        driver.stop()
    for what, seconds in timings.items():
        print(f"{what}: {seconds * 1000:.1f} ms")


def renew(lab: Lab, client: subprocess.Popen[bytes]) -> dict[str, str]:
    """SIGUSR1 makes udhcpc renew (a unicast REQUEST to the server); the answer is its next event."""
    seen = len(lab.client_events(CLIENT))
    client.send_signal(signal.SIGUSR1)
    events = until(lambda: lab.client_events(CLIENT)[seen:], 10, "a renewal")
    assert events[0]["event"] == "renew", events
    return events[0]
