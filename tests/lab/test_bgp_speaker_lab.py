"""ExaBGPSpeaker against a real FRR: announce, change, and withdraw whenever fabricd is gone.

Runs labs/basic.clab.yml renamed, hosts without LXD or the fabricd agent (an agent's own speaker on
h1 would collide with this test's), and drives the speaker through tests/lab/speaker_driver.py in
h1. Every check reads r1's kernel table every 5 ms, so the printed times are what a router does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from fabric_lab import netns
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabric_lab.topology import load_topology
from tests.lab.conftest import REPO, assert_nothing_left

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).with_name("speaker_driver.py")
RTPROT_BGP = 186
V4, V4_NEW, V4_MORE = "10.200.1.0/24", "10.200.3.0/24", "10.200.2.0/24"
V6 = "fd00:200:1::/64"
H1, H1_6 = "10.99.1.11", "fd00:99:1::11"


def route(prefix: str, next_hop: str, **attrs: Any) -> dict[str, Any]:
    return {"prefix": prefix, "next_hop": next_hop, **attrs}


class Fib:
    """r1's kernel routes installed by BGP, polled every 5 ms."""

    def __init__(self, ns_name: str) -> None:
        self.ns = NetNS(ns_name)

    def routes(self) -> dict[str, str]:
        found = {}
        for family in (2, 10):
            for r in self.ns.get_routes(family=family):
                if r["proto"] == RTPROT_BGP:
                    found[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = str(r.get_attr("RTA_GATEWAY"))
        return found

    def wait(self, check: Callable[[dict[str, str]], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while True:
            routes = self.routes()
            if check(routes):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what}: not within {timeout}s; r1 has {routes}")
            time.sleep(0.005)


class Driver:
    """The speaker driver in one node: a fabricd stand-in whose routes come from a JSON file."""

    def __init__(self, node: NodeRuntime, config: Path) -> None:
        self.node, self.config = node, config
        self.work = node.directory / "speaker"
        self.work.mkdir(parents=True, exist_ok=True)
        self.pids: list[int] = []

    def set_routes(self, routes: list[dict[str, Any]]) -> None:
        tmp = self.work / "routes.tmp"
        tmp.write_text(json.dumps(routes))
        tmp.replace(self.work / "routes.json")

    def start(self) -> int:
        (self.work / "status.json").unlink(missing_ok=True)
        files = [self.work / "state", self.work / "routes.json", self.work / "status.json"]
        pid = self.node.spawn(
            [sys.executable, str(DRIVER), str(self.config), *map(str, files)], "speaker-driver"
        )
        self.pids.append(pid)
        return pid

    def status(self) -> dict[str, Any]:
        path = self.work / "status.json"
        with contextlib.suppress(OSError, ValueError):
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        return {}

    def wait_status(self, check: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(status := self.status()):
                return status
            time.sleep(0.02)
        raise AssertionError(f"driver status not reached: {self.status()}")

    def kill_all(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)

    def logs(self) -> str:
        parts = []
        for path in (self.node.log_file("speaker-driver"), self.work / "state" / "exabgp.out"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(parts)


def speaker_lab(topology_file: Path, name: str, state_root: Path) -> Lab:
    """The topology renamed, its hosts without LXD and without the fabricd agent."""
    topology = load_topology(topology_file)
    nodes = tuple(
        dataclasses.replace(n, labels={k: v for k, v in n.labels.items() if not k.startswith("fabric.")})
        for n in topology.nodes
    )
    return Lab(dataclasses.replace(topology, name=name, nodes=nodes), state_root)


def assert_v6_hosts_covered(r1: NodeRuntime) -> None:
    """The router's IPv6 listen range must hold the hosts' addresses, or their sessions are refused."""
    running = r1.run(["vtysh", "-c", "show running-config"]).stdout
    ranges = re.findall(r"bgp listen range (\S+) peer-group HOSTS6", running)
    assert any(ip_address(H1_6) in ip_network(r) for r in ranges), ranges


def frr_peers(r1: NodeRuntime) -> dict[str, str]:
    summary = json.loads(r1.run(["vtysh", "-c", "show bgp summary json"]).stdout or "{}")
    return {
        f"{family}:{peer}": data.get("state", "")
        for family, table in summary.items()
        for peer, data in table.get("peers", {}).items()
    }


def frr_sessions(r1: NodeRuntime) -> dict[str, tuple[int, int, str]]:
    """family:peer → (session uptime in ms, prefixes received, state)."""
    summary = json.loads(r1.run(["vtysh", "-c", "show bgp summary json"]).stdout or "{}")
    return {
        f"{family}:{peer}": (data.get("peerUptimeMsec", 0), data.get("pfxRcd", 0), data.get("state", ""))
        for family, table in summary.items()
        for peer, data in table.get("peers", {}).items()
    }


def frr_route(r1: NodeRuntime, prefix: str) -> dict[str, Any]:
    family = "ipv6" if ":" in prefix else "ipv4"
    data = json.loads(r1.run(["vtysh", "-c", f"show bgp {family} unicast {prefix} json"]).stdout or "{}")
    paths = data.get("paths") or [{}]
    path: dict[str, Any] = paths[0]
    return path


@contextlib.contextmanager
def running(lab: Lab) -> Iterator[list[int]]:
    lab.down()
    state = lab.up()
    recorded = [n.holder_pid for n in state.nodes.values() if n.holder_pid]
    try:
        yield recorded
    finally:
        lab.down()
    assert_nothing_left(lab, recorded)


def test_speaker_announces_changes_and_withdraws_when_fabricd_dies(lab_host: None, state_root: Path) -> None:
    lab = speaker_lab(
        REPO / "labs" / "basic.clab.yml", os.environ.get("TSPEAKER_LAB", "tspeaker"), state_root
    )
    times: dict[str, float] = {}
    with running(lab) as recorded:
        r1, driver = lab.node("r1"), Driver(lab.node("h1"), REPO / "labs" / "basic" / "h1" / "fabricd.yaml")
        fib = Fib(r1.netns_name)
        try:
            assert_v6_hosts_covered(r1)
            both = {V4: H1, V6: H1_6}
            driver.set_routes([route(V4, H1, med=10, communities=["65000:1"]), route(V6, H1_6)])
            driver.start()
            times["start->fib v4"] = fib.wait(lambda r: r.get(V4) == H1, 20, "first IPv4 route at r1")
            times["start->fib v4+v6"] = times["start->fib v4"] + fib.wait(lambda r: r == both, 20, "both")
            status = driver.wait_status(lambda s: set(s.get("routes", {}).values()) == {"announced"})
            assert [(p["name"], p["state"], p["prefixes_sent"]) for p in status["peers"]] == [
                ("r1", "established", 1),
                ("r1-v6", "established", 1),
            ]
            established = {f"ipv4Unicast:{H1}": "Established", f"ipv6Unicast:{H1_6}": "Established"}
            assert frr_peers(r1).items() >= established.items()
            path = frr_route(r1, V4)
            assert path.get("metric") == 10 and path.get("community", {}).get("string") == "65000:1", path

            # (2) a new route, then a changed set: one prefix gone, one new, one re-announced.
            driver.set_routes(
                [route(V4, H1, med=10, communities=["65000:1"]), route(V6, H1_6), route(V4_MORE, H1)]
            )
            times["announce->fib"] = fib.wait(lambda r: V4_MORE in r, 5, "announce")
            driver.set_routes([route(V4_MORE, H1, med=20), route(V6, H1_6), route(V4_NEW, H1)])
            times["withdraw->fib"] = fib.wait(lambda r: V4 not in r, 5, "withdraw")
            fib.wait(lambda r: r == {V4_MORE: H1, V4_NEW: H1, V6: H1_6}, 5, "changed set")
            deadline = time.monotonic() + 5
            while frr_route(r1, V4_MORE).get("metric") != 20:  # re-announced in place, never withdrawn
                assert V4_MORE in fib.routes() and time.monotonic() < deadline
                time.sleep(0.005)
            final = {V4_MORE: H1, V4_NEW: H1, V6: H1_6}
            base = [route(V4_MORE, H1, med=20), route(V6, H1_6), route(V4_NEW, H1)]

            # Bulk lines: routes sharing next hop and attributes go as one `announce attributes ...
            # nlri P1 P2 ...` line per peer (IPv4 and IPv6), and leave as one `withdraw attributes`.
            bulk4 = {f"10.202.{i}.0/24": H1 for i in range(40)}
            bulk6 = {str(ip_network(f"fd00:202:{i}::/64")): H1_6 for i in range(12)}
            attrs = {"med": 7, "communities": ["65000:7"], "large_communities": ["65000:7:7"]}
            driver.set_routes(
                base
                + [route(p, H1, **attrs) for p in bulk4]
                + [route(p, H1_6, local_pref=150) for p in bulk6]
            )
            times["bulk announce->fib"] = fib.wait(
                lambda r: r == final | bulk4 | bulk6, 10, "bulk-announced routes"
            )
            path = frr_route(r1, "10.202.39.0/24")
            assert path.get("metric") == 7 and path.get("community", {}).get("string") == "65000:7", path
            assert path.get("largeCommunity", {}).get("string") == "65000:7:7", path
            status = driver.wait_status(lambda s: set(s.get("routes", {}).values()) == {"announced"})
            sent = {p["name"]: p["prefixes_sent"] for p in status["peers"]}
            assert sent == {"r1": 2 + 40, "r1-v6": 1 + 12}, sent
            exabgp_log = driver.work / "state" / "exabgp.log"
            log = exabgp_log.read_text(errors="replace") if exabgp_log.exists() else ""
            assert "issue parsing" not in log and "could not parse" not in log
            driver.set_routes(base)
            times["bulk withdraw->fib"] = fib.wait(lambda r: r == final, 10, "bulk-withdrawn routes")

            # A session reset from the router's side: new sessions start with nothing received, so
            # prefixes received on them were re-sent by ExaBGP on its own (the gap is too short for
            # zebra to touch the kernel, so the FIB cannot show it).
            before = frr_sessions(r1)
            cleared = time.monotonic()
            r1.run(["vtysh", "-c", "clear bgp *"])
            while True:
                now, age_ms = frr_sessions(r1), (time.monotonic() - cleared) * 1000
                if all(k in now and now[k][0] < age_ms and now[k][1:] == v[1:] for k, v in before.items()):
                    break
                assert age_ms < 10000, f"after clear bgp: {now} (before {before})"
                time.sleep(0.05)
            times["clear bgp->resent"] = time.monotonic() - cleared
            fib.wait(lambda r: r == final, 5, "routes after clear bgp")

            # (3) fabricd killed: the kernel kills ExaBGP (PDEATHSIG), the sessions close.
            status = driver.wait_status(lambda s: s.get("exabgp_pid") is not None)
            os.kill(status["pid"], signal.SIGKILL)
            times["sigkill fabricd->withdrawn"] = fib.wait(lambda r: not r, 5, "withdraw on fabricd SIGKILL")
            time.sleep(0.2)
            assert not netns.alive(status["exabgp_pid"])

            # (4) ExaBGP alone killed: restarted and given the full set again.
            driver.start()
            fib.wait(lambda r: r == final, 20, "routes from a fresh driver")
            first = driver.wait_status(lambda s: s.get("exabgp_pid") is not None)
            os.kill(first["exabgp_pid"], signal.SIGKILL)
            killed = time.monotonic()
            times["sigkill exabgp->withdrawn"] = fib.wait(lambda r: not r, 5, "withdraw on exabgp SIGKILL")
            fib.wait(lambda r: r == final, 10, "routes after exabgp restart")
            times["sigkill exabgp->restored"] = time.monotonic() - killed
            assert driver.wait_status(lambda s: s.get("starts") == 2)["exabgp_pid"] != first["exabgp_pid"]

            # (5) fabricd hung: no heartbeat, the relay stops ExaBGP.
            time.sleep(0.5)
            os.kill(first["pid"], signal.SIGSTOP)
            times["sigstop fabricd->withdrawn"] = fib.wait(lambda r: not r, 6, "withdraw on fabricd SIGSTOP")
            assert times["sigstop fabricd->withdrawn"] < 3.5
            os.kill(first["pid"], signal.SIGKILL)
            os.kill(first["pid"], signal.SIGCONT)
        except BaseException:
            print(driver.logs())
            raise
        finally:
            driver.kill_all()
            fib.ns.close()
            recorded += driver.pids
    print("\nspeaker lab times (s): " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()))


MD5_TOPOLOGY = """\
name: tmd5
topology:
  nodes:
    r:
      kind: linux
      image: quay.io/frrouting/frr:8.4.1
      binds: [r/daemons:/etc/frr/daemons, r/frr.conf:/etc/frr/frr.conf]
      exec: [ip addr add 10.97.0.1/24 dev eth1, ip addr add 10.97.1.1/24 dev eth2]
    good:
      kind: linux
      exec: [ip addr add 10.97.0.11/24 dev eth1]
    bad:
      kind: linux
      exec: [ip addr add 10.97.1.12/24 dev eth1]
  links:
    - endpoints: [r:eth1, good:eth1]
    - endpoints: [r:eth2, bad:eth1]
"""
# Characters ExaBGP's config syntax cannot quote: the speaker writes the key in base64.
PASSWORD = "s3cr#t;{x}\"q'z\\w"
FRR_MD5 = """\
frr defaults datacenter
hostname r
router bgp 65000
 bgp router-id 10.97.0.1
 no bgp ebgp-requires-policy
 neighbor HOSTS peer-group
 neighbor HOSTS remote-as external
 neighbor HOSTS password {password}
 neighbor HOSTS timers 1 3
 neighbor HOSTS timers connect 1
 bgp listen range 10.97.0.0/16 peer-group HOSTS
"""
HOST_CONFIG = """\
host: {{name: {name}, underlay_address: {address}}}
bgp:
  local_asn: {asn}
  hold_time: 3
  peers:
    - {{name: r, address: {peer}, asn: 65000, password: {password}}}
"""


def test_md5_password_session_with_a_listen_range(lab_host: None, state_root: Path, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "daemons").write_text("bgpd=yes\nvtysh_enable=yes\n")
    (tmp_path / "r" / "frr.conf").write_text(FRR_MD5.format(password=PASSWORD))
    (tmp_path / "md5.clab.yml").write_text(MD5_TOPOLOGY)
    configs = {}
    for name, address, peer, asn, password in (
        ("good", "10.97.0.11", "10.97.0.1", 65011, PASSWORD),
        ("bad", "10.97.1.12", "10.97.1.1", 65012, PASSWORD + "x"),
    ):
        configs[name] = tmp_path / f"{name}.yaml"
        text = HOST_CONFIG.format(
            name=name, address=address, peer=peer, asn=asn, password=json.dumps(password)
        )
        configs[name].write_text(text)
    lab = speaker_lab(tmp_path / "md5.clab.yml", os.environ.get("TMD5_LAB", "tmd5"), state_root)
    times: dict[str, float] = {}
    with running(lab) as recorded:
        r = lab.node("r")
        good, bad = Driver(lab.node("good"), configs["good"]), Driver(lab.node("bad"), configs["bad"])
        fib = Fib(r.netns_name)
        try:
            assert PASSWORD in r.run(["vtysh", "-c", "show running-config"]).stdout
            good.set_routes([route("10.201.1.0/24", "10.97.0.11")])
            bad.set_routes([route("10.201.2.0/24", "10.97.1.12")])
            good.start()
            bad.start()
            fib.wait(lambda routes: "10.201.1.0/24" in routes, 20, "route over the MD5 session")
            assert frr_peers(r).get("ipv4Unicast:10.97.0.11") == "Established"
            time.sleep(4)  # several connect attempts of the wrong key
            assert "10.201.2.0/24" not in fib.routes() and "ipv4Unicast:10.97.1.12" not in frr_peers(r)
            assert [p["state"] for p in bad.status()["peers"]] != ["established"]
            # A clean stop (SIGTERM): ExaBGP closes with a Cease, the router withdraws at once.
            os.kill(good.pids[0], signal.SIGTERM)
            times["sigterm fabricd->withdrawn"] = fib.wait(lambda routes: not routes, 5, "clean stop")
        except BaseException:
            print(good.logs(), bad.logs())
            raise
        finally:
            good.kill_all()
            bad.kill_all()
            fib.ns.close()
            recorded += good.pids + bad.pids
    print("\nmd5 lab times (s): " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()))
