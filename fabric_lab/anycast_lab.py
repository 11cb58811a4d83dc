"""The anycast lab's moving parts, for its lab tests and bench.anycast (labs/anycast.clab.yml).

- `EchoBackend`: one busybox instance on a host with static addresses (10.210.X.10/24,
  fd00:210:X::10/64 on eth0; the anycast addresses on its loopback), the key that makes it a
  backend of the service `echo`, and the echo responder (fabric_lab/anycast_echo.py) in its network
  namespace, which can be killed and started again (a backend that fails and recovers).
- `Traffic`: the query client (fabric_lab/anycast_client.py) running in the `client` node, and its
  per-second lines read back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from pyroute2 import NetNS

from fabric_lab import netns, static_address
from fabric_lab.node import LabError, NodeRuntime

SERVICE = "echo"
ANYCAST_V4 = "10.250.0.53"
ANYCAST_V6 = "fd00:250::53"
PORT = 7
HOSTS = ("h1", "h2", "h3")
# Each host's underlay address: the next hop r1 learns for the host's announcements.
UNDERLAY = {
    "h1": ("10.99.1.11", "fd00:99:1::11"),
    "h2": ("10.99.2.12", "fd00:99:2::12"),
    "h3": ("10.99.3.13", "fd00:99:3::13"),
}
# r1's interface towards each host.
ROUTER_PORT = {"h1": "eth1", "h2": "eth2", "h3": "eth3"}


def host_index(host: str) -> int:
    return HOSTS.index(host) + 1


def instance_addresses(host: str) -> tuple[str, str]:
    """The echo instance's own addresses on host (what the health check targets)."""
    index = host_index(host)
    return f"10.210.{index}.10", f"fd00:210:{index}::10"


@dataclass
class EchoBackend:
    node: NodeRuntime
    instance: str
    responder_pid: int | None = None
    pids: list[int] = field(default_factory=list)  # every responder started, for teardown checks

    @property
    def host(self) -> str:
        return self.node.name

    def in_instance(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return self.node.run(["lxc", "exec", self.instance, "--", *argv], check=False, timeout=30)

    def instance_pid(self) -> int:
        state = json.loads(self.node.run(["lxc", "query", f"/1.0/instances/{self.instance}/state"]).stdout)
        pid = int(state.get("pid") or 0)
        if pid <= 0:
            raise LabError(f"{self.instance} on {self.host}: not running (no init pid)")
        return pid

    def in_netns(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """A command of the node (the machine's tools) inside the instance's network namespace."""
        return self.node.run(["nsenter", f"--target={self.instance_pid()}", "--net", "--", *argv])

    def launch(self) -> None:
        """Create and start the instance, address it, and start its responder."""
        v4, v6 = instance_addresses(self.host)
        index = host_index(self.host)
        self.node.run(["lxc", "init", "busybox", self.instance, "-c", f"user.fabric.anycast.{SERVICE}=true"])
        self.node.run(["lxc", "start", self.instance])
        if not static_address.stop_dhcp_client(self.in_instance):
            raise LabError(f"{self.instance}: its DHCP client never started")
        self.in_netns(["sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0"])
        static_address.set_static(self.in_instance, f"{v4}/24")
        for argv in (
            ["ip", "-6", "addr", "flush", "dev", "eth0", "scope", "global"],
            ["ip", "-6", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad"],
            ["ip", "route", "replace", "default", "via", f"10.210.{index}.1"],
            ["ip", "-6", "route", "replace", "default", "via", f"fd00:210:{index}::1"],
            ["ip", "addr", "replace", f"{ANYCAST_V4}/32", "dev", "lo"],
            ["ip", "-6", "addr", "replace", f"{ANYCAST_V6}/128", "dev", "lo"],
        ):
            self.in_netns(argv)
        self.start_responder()

    def start_responder(self) -> int:
        v4, v6 = instance_addresses(self.host)
        argv = ["nsenter", f"--target={self.instance_pid()}", "--net", "--"]
        argv += [
            "python",
            "-m",
            "fabric_lab.anycast_echo",
            self.host,
            str(PORT),
            v4,
            v6,
            ANYCAST_V4,
            ANYCAST_V6,
        ]
        log = self.node.log_file(f"echo-{self.instance}")
        offset = log.stat().st_size if log.exists() else 0  # the log is appended to: read only this run's
        pid = self.node.spawn(argv, f"echo-{self.instance}")
        self.pids.append(pid)
        deadline = time.monotonic() + 10
        while f"echo {self.host}: answering on port {PORT}" not in self.log_since(offset):
            if not netns.alive(pid) or time.monotonic() > deadline:
                raise LabError(f"{self.instance}: echo responder did not start: {self.log_since(offset)}")
            time.sleep(0.01)
        self.responder_pid = pid
        return pid

    def log_since(self, offset: int) -> str:
        path = self.node.log_file(f"echo-{self.instance}")
        if not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-400:]

    def kill_responder(self) -> None:
        """The service dies (SIGKILL): queries and health checks to this backend go unanswered."""
        pid = self.responder_pid
        if pid is None:
            return
        self.responder_pid = None
        stop_and_reap(pid)

    def stop(self) -> None:
        for pid in self.pids:
            stop_and_reap(pid)


def stop_and_reap(pid: int, timeout: float = 5) -> None:
    if netns.alive(pid):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while netns.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Traffic:
    """The query client in the client node, at `rate` queries per second to `target`."""

    client: NodeRuntime
    target: str
    out: Path
    rate: float = 1000.0
    pid: int | None = None

    def start(self) -> None:
        self.out.unlink(missing_ok=True)
        argv = ["python", "-m", "fabric_lab.anycast_client", "--target", self.target]
        argv += ["--port", str(PORT), "--rate", f"{self.rate:g}", "--out", str(self.out)]
        self.pid = self.client.spawn(argv, f"client-{self.out.stem}")

    def stop(self, timeout: float = 10) -> dict[str, Any]:
        """Stop sending, wait for the last answers, and return the final totals."""
        if self.pid is not None and netns.alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while netns.alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.pid is not None and netns.alive(self.pid):
                stop_and_reap(self.pid)
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
        self.pid = None
        done = [line for line in self.lines(include_done=True) if line.get("done")]
        return done[-1] if done else {}

    def lines(self, include_done: bool = False) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        found = []
        for text in self.out.read_text().splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue  # a line still being written
            if include_done or not line.get("done"):
                found.append(line)
        return found

    def settled_until(self) -> float:
        """The monotonic time up to which every query is settled (the end of the last line's second)."""
        seen = self.lines()
        return seen[-1]["start"] + 1 if seen else 0.0

    def wait_settled(self, until: float, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.settled_until() < until:
            if time.monotonic() > deadline:
                raise AssertionError(f"client lines not settled up to {until:.3f} within {timeout:g}s")
            time.sleep(0.1)

    def window(self, start: float, end: float) -> Window:
        """The seconds that begin in [start, end), summed."""
        return summed([line for line in self.lines() if start <= line["start"] < end])


@dataclass
class Window:
    sent: int
    answered: Counter[str]
    lost_at: list[float]
    late: int
    seconds: list[dict[str, Any]]

    @property
    def lost(self) -> int:
        return len(self.lost_at)

    def lost_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.lost_at if start <= t < end)

    def silent_seconds(self) -> list[int]:
        """Seconds in which nothing at all was answered."""
        return [s["second"] for s in self.seconds if not sum(s["answered"].values())]


def summed(lines: Sequence[dict[str, Any]]) -> Window:
    answered: Counter[str] = Counter()
    lost_at: list[float] = []
    for line in lines:
        answered.update(line["answered"])
        lost_at += line["lost_at"]
    return Window(
        sent=sum(line["sent"] for line in lines),
        answered=answered,
        lost_at=sorted(lost_at),
        late=sum(line["late"] for line in lines),
        seconds=list(lines),
    )


class RouterFib:
    """r1's kernel table, read through one open netlink socket in its namespace (poll every 5 ms)."""

    def __init__(self, ns_name: str) -> None:
        self.ns = NetNS(ns_name)

    def close(self) -> None:
        self.ns.close()

    def __enter__(self) -> RouterFib:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def hops(self, prefix: str) -> set[str]:
        """Gateways of the route for exactly this prefix (ECMP next hops included)."""
        net = ip_network(prefix)
        family = 2 if net.version == 4 else 10
        found: set[str] = set()
        for route in self.ns.get_routes(family=family, table=254):
            dst = route.get_attr("RTA_DST")
            if dst is None or route["dst_len"] != net.prefixlen or ip_address(dst) != net.network_address:
                continue
            if route.get_attr("RTA_GATEWAY"):
                found.add(route.get_attr("RTA_GATEWAY"))
            for hop in route.get_attr("RTA_MULTIPATH") or []:
                if hop.get_attr("RTA_GATEWAY"):
                    found.add(hop.get_attr("RTA_GATEWAY"))
        return found

    def wait(self, prefix: str, wanted: set[str], timeout: float, since: float | None = None) -> float:
        """Seconds from `since` (default now) until the prefix's next hops are exactly `wanted`."""
        started = time.monotonic() if since is None else since
        seen: set[str] = set()
        while time.monotonic() - started < timeout:
            seen = self.hops(prefix)
            if seen == wanted:
                return time.monotonic() - started
            time.sleep(0.005)
        raise AssertionError(f"{prefix} at r1: want {sorted(wanted)}, have {sorted(seen)} after {timeout:g}s")


def all_hops(family: int, hosts: Sequence[str] = HOSTS) -> set[str]:
    """The next hops r1 has for the anycast address of this family when these hosts announce it."""
    return {UNDERLAY[h][0 if family == 4 else 1] for h in hosts}


def cut_table(lab_name: str) -> str:
    return f"{lab_name}_cut"


def cut_link(router: NodeRuntime, lab_name: str, host: str) -> None:
    """Drop every packet on r1's interface to `host` with nftables in r1 (the link stays up, so only
    BFD or the hold time can tell)."""
    port = ROUTER_PORT[host]
    rules = (
        f"table inet {cut_table(lab_name)} {{\n"
        f'    chain pre {{ type filter hook prerouting priority -400; iifname "{port}" drop; }}\n'
        f'    chain out {{ type filter hook output priority -400; oifname "{port}" drop; }}\n'
        "}\n"
    )
    router.run(["nft", "-f", "-"], input_text=rules)


def heal_link(router: NodeRuntime, lab_name: str) -> None:
    router.run(["nft", "delete", "table", "inet", cut_table(lab_name)], check=False)


def vtysh_json(router: NodeRuntime, command: str) -> Any:
    return json.loads(router.run(["vtysh", "-c", command]).stdout or "{}")


def updates_received(router: NodeRuntime, host: str) -> dict[str, int]:
    """BGP UPDATEs r1 has received from the host, per session (IPv4 and IPv6 neighbor)."""
    counts = {}
    for address in UNDERLAY[host]:
        neighbor = vtysh_json(router, f"show bgp neighbors {address} json").get(address, {})
        counts[address] = int(neighbor.get("messageStats", {}).get("updatesRecv", 0))
    return counts


def router_bfd(router: NodeRuntime, host: str, enabled: bool) -> None:
    """BGP on r1 follows BFD for this host's sessions, or only its hold time (the baseline)."""
    lines = []
    for address in UNDERLAY[host]:
        lines.append(f"neighbor {address} bfd profile fast" if enabled else f"no neighbor {address} bfd")
    argv = ["vtysh", "-c", "configure terminal", "-c", "router bgp 65000"]
    for line in lines:
        argv += ["-c", line]
    router.run(argv)


def bfd_up_at_router(router: NodeRuntime) -> dict[str, str]:
    """r1's BFD session state per peer address."""
    peers = json.loads(router.run(["vtysh", "-c", "show bfd peers json"]).stdout or "[]")
    return {p["peer"]: p["status"] for p in peers}


def router_paths(router: NodeRuntime, prefix: str) -> dict[str, dict[str, Any]]:
    """r1's BGP paths for the prefix, by the announcing peer's address: local-pref, MED, communities."""
    family = "ipv4" if ip_network(prefix).version == 4 else "ipv6"
    shown = vtysh_json(router, f"show bgp {family} unicast {prefix} json")
    found = {}
    for path in shown.get("paths", []):
        peer = path.get("peer", {}).get("peerId")
        if peer:
            found[str(peer)] = {
                # FRR shows locPrf and metric only when the route carries them: an eBGP route
                # without LOCAL_PREF has the default 100, one without MED none.
                "local_pref": path.get("locPrf", 100),
                "med": path.get("metric"),
                "communities": (path.get("community") or {}).get("string", ""),
            }
    return found
