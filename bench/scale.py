"""50,000 routes from synthetic observed state through the real fabricd agent, ExaBGP and FRR.

Two cases (bench/synthetic.py), each in a basic lab of its own whose hosts are stripped (no LXD,
no agent from the lab): best, 50,000 /32s over one next hop with no attributes; worst, 50,000
routes over 500 next hops with per-network communities and MED, IPv4 /24../32 and IPv6 /48../64.
bench/agent_driver.py runs the real fabricd Agent in h1 with a synthetic LXD view; the benchmark
shows it the snapshot and watches r1 from outside: the kernel tables (IPv4 trie prefix count and
IPv6 route entries) every 0.25 s and bgpd's received-prefix counts every 1 s.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path

from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

from bench.driver_link import DriverLink
from bench.fib import ProcFib
from bench.labs import BASIC, named_lab
from bench.stats import Json, check, distribution
from bench.synthetic import (
    H1_CONFIG,
    WORST_NETWORKS,
    WORST_V6_NETWORKS,
    worst_v4_next_hop,
    worst_v6_next_hop,
)
from fabric_lab import netns
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

H1_V4, H1_V6 = "10.99.1.11", "fd00:99:1::11"
# r1's and h1's addresses in the worst case's next-hop subnet, on their shared link
WORST_HOP_ADDRESSES = {"r1": "10.98.0.1/22", "h1": "10.98.0.2/22"}
POLL_S = 0.25  # the kernel tables' counts
RIB_POLL_S = 1.0  # bgpd's received count: each poll spawns vtysh, so less often
INSTALL_TIMEOUT_S = 600.0
INSTALL_GOAL_S = {"best": 10.0, "worst": 20.0}
COLD_RECONCILE_GOAL_S = 1.5
RSS_GOAL_MB = 150.0
MOVES = 20  # one-instance events with every route installed
UNCHANGED_PASSES = 5  # passes with nothing changed, as the periodic reconcile makes them
STALL_KEYS = (
    "loop_max_stall_s",
    "stalls_over_1s",
    "stalls_over_3s",
    "gc_max_pause_s",
    "gc_total_s",
    "gc_full_collections",
)
WATCHDOG_LINE = "no heartbeat from fabricd"
ROLES = ((b"bench.agent_driver", "fabricd"), (b"fabricd.bgp.relay", "relay"), (b"exabgp", "exabgp"))

Progress = Callable[[str], None]


@dataclass
class Poller:
    """Calls `read` every POLL_S in a thread, keeping (time.monotonic(), value) samples."""

    read: Callable[[], int | None]
    interval: float = POLL_S
    samples: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                value = self.read()
            except Exception:  # a failed read is a missing sample, not the end of the run
                value = None
            if value is None:
                self.errors += 1
            else:
                self.samples.append((time.monotonic(), value))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def first_at_least(self, total: int, after: float = 0.0) -> float | None:
        return next((t for t, v in list(self.samples) if v >= total and t > after), None)

    def wait(self, total: int, timeout: float, after: float = 0.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (found := self.first_at_least(total, after)) is not None:
                return found
            time.sleep(0.05)
        return None


def bgp_received(r1: NodeRuntime) -> int | None:
    """Prefixes bgpd received from h1 over its IPv4 and IPv6 sessions together."""
    out = r1.run(["vtysh", "-c", "show bgp summary json"], check=False, timeout=30).stdout
    data = json.loads(out or "{}")
    total = 0
    for family, peer in (("ipv4Unicast", H1_V4), ("ipv6Unicast", H1_V6)):
        value = data.get(family, {}).get("peers", {}).get(peer, {}).get("pfxRcd")
        if value is None and family == "ipv4Unicast":
            return None
        total += int(value or 0)
    return total


def zebra_summary(r1: NodeRuntime) -> Json:
    out = r1.run(["vtysh", "-c", "show ip route summary json"], check=False, timeout=30).stdout
    data = json.loads(out or "{}")
    return {
        str(r.get("type")): {"rib": r.get("rib"), "fib": r.get("fib")}
        for r in data.get("routes", [])
        if isinstance(r, dict)
    }


def vm_mb(pid: int | None, field_name: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _role(pid: int) -> str:
    command = _cmdline(pid)
    for needle, role in ROLES:
        if needle in command:
            return role
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_seconds(namespaces: Sequence[str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each kind of process in these namespaces."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for name in namespaces:
        for pid in netns.pids_in(name):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            role = f"{name.rsplit('-', 1)[-1]}:{_role(pid)}"
            found[role] = found.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in used.items() if v >= 0.05), key=lambda kv: -kv[1]))


def _timeline(
    t0: float, fib: list[tuple[float, int]], rib: list[tuple[float, int]], step: float = 1.0
) -> list[list[float | int | None]]:
    """[seconds since set_routes, FIB count, bgpd received] about once a second."""
    rows: list[list[float | int | None]] = []
    next_at = t0
    for at, count in fib:
        if at < next_at:
            continue
        received = next((v for t, v in reversed(rib) if t <= at), None)
        rows.append([round(at - t0, 2), count, received])
        next_at = at + step
    if fib and (not rows or rows[-1][0] != round(fib[-1][0] - t0, 2)):
        at, count = fib[-1]
        rows.append([round(at - t0, 2), count, next((v for t, v in reversed(rib) if t <= at), None)])
    return rows


@dataclass
class Expected:
    """What a case puts at r1: next hops by family (as r1's tables show them)."""

    v4_hops: tuple[str, ...]
    v6_hops: tuple[str, ...]

    @classmethod
    def of(cls, case: str) -> Expected:
        if case == "best":
            return cls((H1_V4,), ())
        first_v6 = WORST_NETWORKS - WORST_V6_NETWORKS
        return cls(
            tuple(str(worst_v4_next_hop(n)) for n in range(first_v6)),
            tuple(str(worst_v6_next_hop(n)) for n in range(first_v6, WORST_NETWORKS)),
        )


class ScaleRun:
    def __init__(self, lab: Lab, case: str, instances: int, routes_each: int, progress: Progress) -> None:
        self.lab, self.case, self.progress = lab, case, progress
        self.instances, self.routes_each = instances, routes_each
        self.h1, self.r1 = lab.node("h1"), lab.node("r1")
        holder = lab.state().nodes["r1"].holder_pid
        if holder is None:
            raise RuntimeError("r1 has no holder process")
        self.fib = ProcFib(holder)
        self.expected = Expected.of(case)
        self.state = self.h1.directory / f"bench-agent-{case}"

    def exact_count(self) -> int:
        return self.fib.count_via(self.expected.v4_hops) + self.fib.count_via6(self.expected.v6_hops)

    def run(self) -> Json:
        if self.case == "worst":
            for node, address in WORST_HOP_ADDRESSES.items():
                self.lab.node(node).run(["ip", "addr", "add", address, "dev", "eth1"])
        args = ["--config", str(H1_CONFIG), "--state", str(self.state), "--case", self.case,
                "--instances", str(self.instances),
                "--routes-per-instance", str(self.routes_each)]  # fmt: skip
        driver = DriverLink(self.lab, "h1", args, f"bench-agent-{self.case}", module="bench.agent_driver")
        try:
            started = driver.call("start", timeout=120)
            built = driver.call("build", timeout=300)
            driver.call("status", timeout=60)  # the loop-stall figures start from here
            self.progress(f"scale {self.case}: sessions up in {started['established_s']:.2f}s; loading")
            before = self.exact_count()
            base4, base6 = self.fib.trie_prefixes(), self.fib.v6_entries()
            namespaces = [self.h1.netns_name, self.r1.netns_name]
            cpu_before = cpu_seconds(namespaces)
            with (
                Poller(lambda: self.fib.trie_prefixes() - base4 + self.fib.v6_entries() - base6) as fib,
                Poller(lambda: bgp_received(self.r1), RIB_POLL_S) as rib,
            ):
                loaded = driver.call("load", timeout=INSTALL_TIMEOUT_S)
                t0, total = float(loaded["t_call"]), int(loaded["routes"])
                took = float(loaded["t_done"]) - t0
                self.progress(f"scale {self.case}: pass done in {took:.2f}s; installing")
                installed = self._installed(fib, total)
                exact = self.exact_count()
                acked = driver.expect("acked", timeout=INSTALL_TIMEOUT_S)
                cpu_used = _cpu_delta(cpu_before, cpu_seconds(namespaces))
                received = rib.wait(total, 30)
                read_costs = self._read_cost()
            status = driver.call("status", timeout=60)
            served = self._fabricctl_status()
            after_status = driver.call("status", timeout=60)
            exabgp = status.get("exabgp_pid")
            relays = [p for p in children(exabgp) if b"fabricd.bgp.relay" in _cmdline(p)]
            helpers = {
                "exabgp_rss_mb": vm_mb(exabgp, "VmRSS"),
                "exabgp_peak_rss_mb": vm_mb(exabgp, "VmHWM"),
                "relay_rss_mb": [vm_mb(p, "VmRSS") for p in relays],
            }
            self.progress(f"scale {self.case}: one-instance events with every route installed")
            moves = self._moves(driver)
            unchanged = [driver.call("pass", timeout=60) for _ in range(UNCHANGED_PASSES)]
            time.sleep(2.0)  # a watchdog kill near the end shows as a restart in the count below
            final = driver.call("status", timeout=60)
            helpers["exabgp_rss_after_events_mb"] = vm_mb(exabgp, "VmRSS")
        finally:
            driver.close()
        fib_s = None if installed is None else installed - t0
        cold_cpu = float(loaded["cpu_s"])
        peak_mb = _mb(final["vmhwm_kb"])
        goal_s = INSTALL_GOAL_S[self.case]
        return {
            "case": self.case,
            "lab_name": self.lab.topology.name,
            "agent": (
                "bench/agent_driver.py in h1: the real fabricd Agent (features from "
                "fabricd.agent.compose.build_features, reconcile loop, status snapshot, control socket, "
                "ExaBGP as its child), config labs/basic/h1 without the overlay, LXD view synthetic"
            ),
            "routes": total,
            "families": loaded["families"],
            "next_hops": loaded["next_hops"],
            "attribute_sets": loaded["attribute_sets"],
            "refused": loaded["refused"],
            "withheld": loaded["withheld"],
            "snapshot_build_s": round(float(built["seconds"]), 3),
            "sessions_established_s": round(float(started["established_s"]), 3),
            "cold_reconcile": {
                "what": (
                    "the agent process's CPU seconds (all threads) from showing the snapshot to its LXD "
                    "view until the end of the reconcile pass that observed it (plan, merge, every "
                    "command written to ExaBGP)"
                ),
                "cpu_s": round(cold_cpu, 3),
                "wall_s": round(float(loaded["t_done"]) - t0, 3),
                "pass_s": loaded["pass_s"],
                "goal": {"cpu_max_s": COLD_RECONCILE_GOAL_S},
                "meets_goal": check(cold_cpu, COLD_RECONCILE_GOAL_S),
            },
            "install": {
                "t0": "the snapshot shown to the agent's LXD view (as a first read of LXD), sessions up",
                "fib_poll": "r1's IPv4 main-trie prefix count (/proc/<pid>/net/fib_triestat) plus its "
                "IPv6 route entries (fib_rt_entries of /proc/<pid>/net/rt6_stats), minus their counts "
                "before, every 0.25 s; "
                "the first poll at the total is confirmed by an exact count of routes via the case's next "
                "hops in /proc/<pid>/net/route and ipv6_route",
                "poll_interval_s": POLL_S,
                "bgpd_poll_interval_s": RIB_POLL_S,
                "fib_routes_before": before,
                "reconcile_pass_done_s": round(float(loaded["t_done"]) - t0, 3),
                "exabgp_acked_all_s": round(float(acked["t"]) - t0, 3),
                "frr_bgp_received_all_s": None if received is None else round(received - t0, 3),
                "fib_all_installed_s": None if fib_s is None else round(fib_s, 3),
                "goal": {"fib_all_installed_max_s": goal_s},
                "meets_goal": check(fib_s, goal_s),
                "fib_routes_via_next_hops_after": exact,
                "fib_rate_routes_per_s": None if not fib_s else round(total / fib_s),
                "zebra_summary": zebra_summary(self.r1),
                "fib_read_cost_ms": read_costs,
                "cpu_s_during_install": cpu_used,
                "cpu_note": "user+system CPU seconds from t0 to all routes in the FIB, per process kind in "
                "h1 and r1 (2 cores available in all)",
                "timeline": {
                    "columns": ["s_since_t0", "fib_routes", "bgpd_pfxRcd_from_h1"],
                    "rows": _timeline(t0, fib.samples, rib.samples),
                },
            },
            "status_via_control_socket": served,
            "event_at_scale": moves,
            "unchanged_pass": {
                "what": "a reconcile pass with nothing changed, as the periodic one makes it",
                "pass_s": distribution([float(r["t_done"]) - float(r["t_call"]) for r in unchanged]),
                "cpu_s": distribution([float(r["cpu_s"]) for r in unchanged]),
            },
            "speaker_health": {
                "what": (
                    "the agent's event loop: worst wake-up delay and GC pauses (a 3 s stall starves the "
                    "relay of heartbeats: it stops ExaBGP and every route is withdrawn)"
                ),
                "install": {k: status.get(k) for k in STALL_KEYS},
                "events_and_unchanged_passes": {k: final.get(k) for k in STALL_KEYS},
                "exabgp_starts_after_install": status.get("exabgp_starts"),
                "exabgp_starts_at_end": final.get("exabgp_starts"),
                "relay_watchdog_kills": _count(self.state / "bgp" / "exabgp.out", WATCHDOG_LINE),
                "relay_watchdog_kills_how": "relay log lines 'no heartbeat from fabricd' in exabgp.out",
            },
            "memory": {
                "goal_applies_to": "the fabricd agent process; ExaBGP (its child) and the relay beside it",
                "agent_peak_rss_mb": peak_mb,
                "agent_peak_rss_how": (
                    "VmHWM of the agent process at the end: its peak over the install (every route in "
                    "r1's FIB and acked), a full `fabricctl status --json` answered from the status "
                    "snapshot, the instance events and the unchanged passes"
                ),
                "agent_rss_mb": _mb(after_status["vmrss_kb"]),
                "goal": {"agent_peak_rss_max_mb": RSS_GOAL_MB},
                "meets_goal": check(peak_mb, RSS_GOAL_MB),
                "agent_rss_mb_by_step": {
                    "sessions_up": _mb(started["vmrss_kb"]),
                    "snapshot_built": _mb(built["vmrss_kb"]),
                    "pass_done": _mb(loaded["vmrss_kb"]),
                    "all_acked": _mb(acked["vmrss_kb"]),
                    "after_status": _mb(after_status["vmrss_kb"]),
                    "after_events": _mb(final["vmrss_kb"]),
                },
                "agent_peak_rss_mb_after_install_and_status": _mb(after_status["vmhwm_kb"]),
                "agent_ru_maxrss_mb": _mb(final["maxrss_kb"]),
                "agent_ru_maxrss_note": (
                    "getrusage(RUSAGE_SELF).ru_maxrss; Linux carries it over fork and exec, so it is at "
                    "least the launching benchmark's size at the time (VmHWM is the agent's own peak)"
                ),
                "synthetic_view_note": (
                    "the synthetic view holds the snapshot fabricd's LXD observer would hold; the real "
                    "observer also keeps a dict of its records and, during a resync, the JSON it reads"
                ),
                **helpers,
            },
        }

    def _fabricctl_status(self) -> Json:
        """A full status over the agent's control socket, answered from its status snapshot."""
        began = time.monotonic()
        socket = str(self.state / "fabricd.sock")
        out = self.h1.fabricctl("--socket", socket, "status", "--json", timeout=120).stdout
        took = time.monotonic() - began
        status = json.loads(out)
        states: dict[str, int] = {}
        for row in status.get("routes", []):
            states[str(row.get("state"))] = states.get(str(row.get("state")), 0) + 1
        return {
            "fabricctl_status_json_s": round(took, 3),
            "reply_bytes": len(out),
            "route_states": states,
            "bgp_peers": {p["address"]: p.get("prefixes_sent") for p in status.get("bgp_peers", [])},
        }

    def _installed(self, fib: Poller, total: int) -> float | None:
        """The first poll with every route in, confirmed by an exact count via the case's next hops."""
        after = 0.0
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        while (found := fib.wait(total, deadline - time.monotonic(), after)) is not None:
            if self.exact_count() >= total:
                return found
            after = found
        return None

    def _read_cost(self) -> Json:
        """What one poll of each kind costs with the full table in place (it competes for the CPU)."""

        def ms(work: Callable[[], object]) -> float:
            began = time.perf_counter()
            work()
            return round((time.perf_counter() - began) * 1000, 2)

        return {
            "fib_triestat_poll": ms(self.fib.trie_prefixes),
            "rt6_stats_poll": ms(self.fib.v6_entries),
            "exact_count": ms(self.exact_count),
            "vtysh_bgp_summary_poll": ms(lambda: bgp_received(self.r1)),
        }

    def _moves(self, driver: DriverLink) -> Json:
        """An instance event with 50,000 routes in place: pass → its new /32s in r1's FIB.

        Reading the whole table takes tens of ms at this size, so presence is asked of the kernel
        with a route lookup per new /32 (netlink RTM_GETROUTE in r1's namespace), every 2 ms.
        """
        pass_s: list[float] = []
        cpu_ms: list[float] = []
        to_fib: list[float] = []
        with NetNS(self.r1.netns_name) as ns:
            for k in range(MOVES):
                reply = driver.call("move", k=k, timeout=60)
                pass_s.append(float(reply["t_done"]) - float(reply["t_call"]))
                cpu_ms.append(float(reply["cpu_s"]) * 1000)
                wanted = [str(ip_network(p).network_address) for p in reply["prefixes"]]
                hop = reply["next_hop"]
                deadline = time.monotonic() + 30
                seen = None
                while seen is None and time.monotonic() < deadline:
                    if all(_via(ns, address) == hop for address in wanted):
                        seen = time.monotonic()
                    else:
                        time.sleep(0.002)
                to_fib.append(math.inf if seen is None else seen - float(reply["t_call"]))
                time.sleep(0.2)
        return {
            "what": "replace one instance record (its IPv4 routes moved to fresh /32s) in the agent's "
            "LXD view: the reconcile pass, and until all its new routes are in r1's FIB (a timed-out "
            "event is an infinite sample)",
            "pass_s": distribution(pass_s),
            "pass_cpu_ms": distribution(cpu_ms, "ms", 3),
            "update_to_fib_s": distribution(to_fib),
        }


def _via(ns: NetNS, address: str) -> str | None:
    """The gateway r1's kernel would use for this address (None: no route)."""
    try:
        found = ns.route("get", dst=address)
    except NetlinkError:
        return None
    for route in found:
        gateway = route.get_attr("RTA_GATEWAY")
        if gateway:
            return str(gateway)
    return None


def _count(path: Path, text: str) -> int:
    """Lines of a log holding this text (0 when there is no log)."""
    try:
        return sum(1 for line in path.read_text(errors="replace").splitlines() if text in line)
    except OSError:
        return 0


def _mb(kb: object) -> float | None:
    return None if kb is None else round(int(str(kb)) / 1024, 1)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def scale_phase(instances: int, routes_each: int, state_root: Path, progress: Progress) -> Json:
    """Both cases, each in a fresh lab; the figures side by side."""
    cases: Json = {}
    for case in ("best", "worst"):
        lab = named_lab(BASIC, f"bench-scale-{case}", state_root, strip_fabric=True)
        progress(f"scale {case}: bringing up {lab.topology.name} (FRR; hosts without LXD or agent)")
        lab.up()
        try:
            cases[case] = ScaleRun(lab, case, instances, routes_each, progress).run()
        finally:
            progress(f"scale {case}: taking {lab.topology.name} down")
            lab.down()
    return {**cases, "side_by_side": side_by_side(cases)}


SIDE_BY_SIDE = {
    "fib_all_installed_s": ("install", "fib_all_installed_s"),
    "install_goal_s": ("install", "goal", "fib_all_installed_max_s"),
    "install_meets_goal": ("install", "meets_goal"),
    "exabgp_acked_all_s": ("install", "exabgp_acked_all_s"),
    "cold_reconcile_cpu_s": ("cold_reconcile", "cpu_s"),
    "cold_reconcile_meets_goal": ("cold_reconcile", "meets_goal"),
    "agent_peak_rss_mb": ("memory", "agent_peak_rss_mb"),
    "agent_rss_meets_goal": ("memory", "meets_goal"),
    "exabgp_rss_mb": ("memory", "exabgp_rss_mb"),
    "exabgp_peak_rss_mb": ("memory", "exabgp_peak_rss_mb"),
    "event_at_scale_to_fib_p50_s": ("event_at_scale", "update_to_fib_s", "p50"),
    "next_hops": ("next_hops",),
    "attribute_sets": ("attribute_sets",),
}


def side_by_side(cases: Json) -> Json:
    """The main figures of each case in one table: {figure: {case: value}} (each also in its case)."""
    table: Json = {}
    for name, path in SIDE_BY_SIDE.items():
        row = {}
        for case, figures in cases.items():
            node: object = figures
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            row[case] = node
        table[name] = row
    return table
