"""50,000 routes from synthetic observed state through a real ExaBGP into FRR, and the memory it takes.

A basic lab with its hosts stripped (no LXD, no agent); bench/scale_driver.py in h1 plans the
synthetic snapshot with IncrementalPlanner and hands plan.routes to an ExaBGPSpeaker, as fabricd
would. Pollers outside the node watch r1: the kernel table (count of routes via h1) and bgpd's
received-prefix count, every 0.25 s.
"""

from __future__ import annotations

import json
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
from bench.synthetic import H1_CONFIG, SYNTHETIC_RANGE
from fabric_lab import netns
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

H1_V4 = "10.99.1.11"
POLL_S = 0.25  # the kernel table's count
RIB_POLL_S = 1.0  # bgpd's received count: each poll spawns vtysh, so less often
INSTALL_TIMEOUT_S = 600.0
INSTALL_GOAL_S = 15.0
RSS_GOAL_MB = 150.0
MOVES = 20  # one-instance events with every route installed
RESENDS = 5  # set_routes of an unchanged set
STALL_KEYS = (
    "loop_max_stall_s",
    "stalls_over_1s",
    "stalls_over_3s",
    "gc_max_pause_s",
    "gc_total_s",
    "gc_full_collections",
)
WATCHDOG_LINE = "no heartbeat from fabricd"
ROLES = ((b"bench.scale_driver", "driver"), (b"fabricd.bgp.relay", "relay"), (b"exabgp", "exabgp"))

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


def bgp_received(r1: NodeRuntime, peer: str) -> int | None:
    out = r1.run(["vtysh", "-c", "show bgp ipv4 unicast summary json"], check=False, timeout=30).stdout
    data = json.loads(out or "{}")
    peers = data.get("peers") or data.get("ipv4Unicast", {}).get("peers", {})
    value = peers.get(peer, {}).get("pfxRcd")
    return None if value is None else int(value)


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


class ScaleRun:
    def __init__(self, lab: Lab, instances: int, routes_each: int, progress: Progress) -> None:
        self.lab, self.instances, self.routes_each, self.progress = lab, instances, routes_each, progress
        self.h1, self.r1 = lab.node("h1"), lab.node("r1")
        holder = lab.state().nodes["r1"].holder_pid
        if holder is None:
            raise RuntimeError("r1 has no holder process")
        self.fib = ProcFib(holder)

    def run(self) -> Json:
        args = ["--config", str(H1_CONFIG), "--state", str(self.h1.directory / "bench-scale"),
                "--allowed", SYNTHETIC_RANGE]  # fmt: skip
        driver = DriverLink(self.lab, "h1", args, "bench-scale-driver")
        try:
            self.progress(
                f"scale: planning {self.instances} instances x {self.routes_each} routes in the driver"
            )
            planned = driver.call("plan", instances=self.instances, routes_each=self.routes_each, timeout=900)
            total = int(planned["routes"])
            started = driver.call("start", timeout=120)
            driver.call("status", timeout=60)  # the loop-stall figures start from here
            self.progress(f"scale: sessions up in {started['established_s']:.2f}s; installing {total} routes")
            before = self.fib.count_via(H1_V4)
            base = self.fib.trie_prefixes()
            namespaces = [self.h1.netns_name, self.r1.netns_name]
            cpu_before = cpu_seconds(namespaces)
            with (
                Poller(lambda: self.fib.trie_prefixes() - base) as fib,
                Poller(lambda: bgp_received(self.r1, H1_V4), RIB_POLL_S) as rib,
            ):
                reply = driver.call("install", timeout=INSTALL_TIMEOUT_S)
                t0 = float(reply["t_call"])
                installed = self._installed(fib, total)
                exact = self.fib.count_via(H1_V4)
                acked = driver.expect("acked", timeout=INSTALL_TIMEOUT_S)
                cpu_used = _cpu_delta(cpu_before, cpu_seconds(namespaces))
                received = rib.wait(total, 30)
                read_costs = self._read_cost()
            status = driver.call("status", timeout=60)
            exabgp = status.get("exabgp_pid")
            zebra = zebra_summary(self.r1)
            relays = [p for p in children(exabgp) if b"fabricd.bgp.relay" in _cmdline(p)]
            helpers = {
                "exabgp_rss_mb": vm_mb(exabgp, "VmRSS"),
                "exabgp_peak_rss_mb": vm_mb(exabgp, "VmHWM"),
                "relay_rss_mb": [vm_mb(p, "VmRSS") for p in relays],
            }
            self.progress("scale: one-instance events with every route installed")
            moves = self._moves(driver)
            resend = [driver.call("resend", timeout=60) for _ in range(RESENDS)]
            unchanged = [float(r["t_done"]) - float(r["t_call"]) for r in resend]
            moves["unchanged_set_routes_s"] = distribution(unchanged)
            moves["unchanged_set_routes_note"] = (
                "set_routes with the very same 50,000 routes, as every periodic reconcile pass makes it"
            )
            time.sleep(2.0)  # a watchdog kill near the end shows as a restart in the count below
            final = driver.call("status", timeout=60)
            helpers["exabgp_rss_after_events_mb"] = vm_mb(exabgp, "VmRSS")
        finally:
            driver.close()
        watchdog_kills = _count(self.h1.directory / "bench-scale" / "bgp" / "exabgp.out", WATCHDOG_LINE)
        fib_s = None if installed is None else installed - t0
        peak_mb = _mb(final["vmhwm_kb"])
        test_imports_mb = round(
            (int(planned["vmrss_kb_after_test_imports"]) - int(planned["vmrss_kb_before_test_imports"]))
            / 1024,
            1,
        )
        return {
            "lab_name": self.lab.topology.name,
            "lab": "labs/basic.clab.yml with fabric.* labels removed (no LXD, no fabricd agent)",
            "driver": "bench/scale_driver.py in h1: IncrementalPlanner + ExaBGPSpeaker, config labs/basic/h1",
            "allowed_ranges": [SYNTHETIC_RANGE],
            "routes": total,
            "driver_cold_update": {
                "cpu_s": round(float(planned["cold_update_cpu_s"]), 3),
                "wall_s": round(float(planned["cold_update_wall_s"]), 3),
            },
            "sessions_established_s": round(float(started["established_s"]), 3),
            "install": {
                "t0": "the driver's ExaBGPSpeaker.set_routes(plan.routes) call (sessions already up)",
                "fib_poll": "prefix count of r1's main FIB trie (/proc/<pid>/net/fib_triestat) minus its "
                "count before, every 0.25 s; the first poll at the total is confirmed by an exact count of "
                "routes via h1 in /proc/<pid>/net/route",
                "poll_interval_s": POLL_S,
                "bgpd_poll_interval_s": RIB_POLL_S,
                "fib_routes_before": before,
                "set_routes_call_s": round(float(reply["t_done"]) - t0, 3),
                "exabgp_acked_all_s": round(float(acked["t"]) - t0, 3),
                "frr_bgp_received_all_s": None if received is None else round(received - t0, 3),
                "fib_all_installed_s": None if fib_s is None else round(fib_s, 3),
                "goal": {"fib_all_installed_max_s": INSTALL_GOAL_S},
                "meets_goal": check(fib_s, INSTALL_GOAL_S),
                "fib_routes_via_h1_after": exact,
                "fib_rate_routes_per_s": None if not fib_s else round(total / fib_s),
                "zebra_summary": zebra,
                "fib_read_cost_ms": read_costs,
                "cpu_s_during_install": cpu_used,
                "cpu_note": "user+system CPU seconds from set_routes to all routes in the FIB, per process "
                "kind in h1 and r1 (2 cores available in all)",
                "timeline": {
                    "columns": ["s_since_set_routes", "fib_routes_via_h1", "bgpd_pfxRcd_from_h1"],
                    "rows": _timeline(t0, fib.samples, rib.samples),
                },
            },
            "event_at_scale": moves,
            "speaker_health": {
                "what": (
                    "the driver's event loop writes a heartbeat every 0.5 s; fabricd's relay stops ExaBGP "
                    "after 3 s without one, and every route is withdrawn until a new ExaBGP is re-sent "
                    "the whole set (which blocks the loop again)"
                ),
                "install": {k: status.get(k) for k in STALL_KEYS},
                "events_and_unchanged_resends": {k: final.get(k) for k in STALL_KEYS},
                "exabgp_starts_after_install": status.get("exabgp_starts"),
                "exabgp_starts_at_end": final.get("exabgp_starts"),
                "relay_watchdog_kills": watchdog_kills,
                "relay_watchdog_kills_how": "relay log lines 'no heartbeat from fabricd' in exabgp.out",
            },
            "memory": {
                "goal_applies_to": "the agent-equivalent driver process (fabricd's own process); "
                "ExaBGP and its relay are reported alongside, not counted",
                "agent_peak_rss_mb": peak_mb,
                "agent_peak_rss_how": "VmHWM of the driver (planner + snapshot + speaker with all routes)",
                "goal": {"agent_peak_rss_max_mb": RSS_GOAL_MB},
                "meets_goal": check(peak_mb, RSS_GOAL_MB),
                "agent_rss_before_snapshot_mb": _mb(planned["vmrss_kb_before_test_imports"]),
                "test_builder_imports_mb": test_imports_mb,
                "test_builder_imports_note": (
                    "the driver imports fabric_lab/lxd_builders (plain record builders, no hypothesis) "
                    "to build the snapshot; fabricd does not, so its peak is about this much lower"
                ),
                "agent_rss_mb_by_step": {
                    "after_plan": _mb(planned["vmrss_kb"]),
                    "after_speaker_start": _mb(started["vmrss_kb"]),
                    "after_set_routes": _mb(reply["vmrss_kb"]),
                    "after_all_acked": _mb(acked["vmrss_kb"]),
                    "after_events": _mb(final["vmrss_kb"]),
                },
                "agent_peak_rss_mb_by_step": {
                    "after_plan": _mb(planned["vmhwm_kb"]),
                    "after_speaker_start": _mb(started["vmhwm_kb"]),
                    "after_set_routes": _mb(reply["vmhwm_kb"]),
                    "after_all_acked": _mb(acked["vmhwm_kb"]),
                    "after_events": _mb(final["vmhwm_kb"]),
                },
                "agent_ru_maxrss_mb": _mb(final["maxrss_kb"]),
                "agent_ru_maxrss_note": (
                    "getrusage(RUSAGE_SELF).ru_maxrss of the driver; Linux carries ru_maxrss over fork and "
                    "exec, so it is at least the launching benchmark process's size at the time (the peak "
                    "figure above is VmHWM, the driver program's own high-water mark)"
                ),
                "agent_peak_rss_minus_test_imports_mb": None
                if peak_mb is None
                else round(peak_mb - test_imports_mb, 1),
                **helpers,
            },
        }

    def _installed(self, fib: Poller, total: int) -> float | None:
        """The first poll with every route in the trie, confirmed by an exact count of routes via h1."""
        after = 0.0
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        while (found := fib.wait(total, deadline - time.monotonic(), after)) is not None:
            if self.fib.count_via(H1_V4) >= total:
                return found
            after = found
        return None

    def _read_cost(self) -> Json:
        """What one poll of each kind costs with the full table in place (it competes for the CPU)."""
        began = time.perf_counter()
        self.fib.trie_prefixes()
        trie_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        self.fib.count_via(H1_V4)
        proc_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        bgp_received(self.r1, H1_V4)
        vtysh_ms = (time.perf_counter() - began) * 1000
        return {
            "fib_triestat_poll": round(trie_ms, 2),
            "proc_net_route_exact_count": round(proc_ms, 1),
            "vtysh_bgp_summary_poll": round(vtysh_ms, 1),
        }

    def _moves(self, driver: DriverLink) -> Json:
        """An instance event with 50,000 routes in place: update + set_routes → new routes in r1's FIB.

        Reading the whole table takes tens of ms at this size, so presence is asked of the kernel
        with a route lookup per new /32 (netlink RTM_GETROUTE in r1's namespace), every 2 ms.
        """
        planner_ms: list[float] = []
        set_routes_s: list[float] = []
        to_fib: list[float] = []
        missed = 0
        with NetNS(self.r1.netns_name) as ns:
            for k in range(MOVES):
                reply = driver.call("move", k=k, timeout=60)
                planner_ms.append((float(reply["t_call"]) - float(reply["t_begin"])) * 1000)
                set_routes_s.append(float(reply["t_done"]) - float(reply["t_call"]))
                wanted = [str(ip_network(p).network_address) for p in reply["prefixes"]]
                deadline = time.monotonic() + 30
                seen = None
                while seen is None and time.monotonic() < deadline:
                    if all(_via(ns, address) == H1_V4 for address in wanted):
                        seen = time.monotonic()
                    else:
                        time.sleep(0.002)
                if seen is None:
                    missed += 1
                else:
                    to_fib.append(seen - float(reply["t_begin"]))
                time.sleep(0.2)
        return {
            "what": "replace one instance record (its routes moved) in the driver: planner update + "
            "set_routes → all its new routes in r1's FIB, with every other route installed",
            "planner_update_ms": distribution(planner_ms, "ms", 3),
            "set_routes_call_s": distribution(set_routes_s),
            "set_routes_note": (
                "ExaBGPSpeaker.set_routes diffs only what changed and yields to the event loop on large sends"
            ),
            "update_to_fib_s": distribution(to_fib),
            "missed": missed,
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
    lab = named_lab(BASIC, "bench-scale", state_root, strip_fabric=True)
    progress(f"scale: bringing up {lab.topology.name} (FRR; hosts without LXD or agent)")
    lab.up()
    try:
        return ScaleRun(lab, instances, routes_each, progress).run()
    finally:
        progress(f"scale: taking {lab.topology.name} down")
        lab.down()
