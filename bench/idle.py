"""fabricd idle cost: CPU of the agent's whole process tree per host while nothing changes.

    sudo .venv/bin/python -m bench.idle [--windows 3] [--seconds 60] [--instances 1000] [--keep-logs]

Prints one JSON document on stdout; progress goes to stderr. Three parts, each in its own lab under
a fresh state directory in /tmp, taken down in a finally:

- demo: labs/basic.clab.yml renamed "bid" (namespaces fl-bid-*): real LXD, fabricd, ExaBGP and FRR,
  three busybox instances (bid-1 and bid-2 on h1, bid-3 on h2) with a route each; the lab's
  fabricd.yaml as it is (reconcile interval 5 s);
- demo_default_interval: the same lab renamed "bidd", its fabricd.yaml copied with reconcile.interval
  at fabricd's default (30 s), as a host runs without that setting;
- at_scale: labs/basic.clab.yml renamed "bidx" without LXD or agents; bench/agent_driver.py in h1 is
  the real fabricd agent (ExaBGP as its child) whose LXD view is a synthetic snapshot of --instances
  running instances (bench/synthetic.py, 5 routes each), every route announced to r1.

After the routes are at r1 and --settle seconds pass, --windows windows of --seconds each: the
utime + stime of the agent's process tree (fabricd, ExaBGP, the relay, any other child) from
/proc/<pid>/stat, per process and in total, as % of one core. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bench.driver_link import DriverLink
from bench.fib import ProcFib
from bench.labs import BASIC, REPO, leftover_namespaces, named_lab, progress, run_reporting, wait_sessions
from bench.proc_tree import TICKS, Proc, WindowUse, boot_ticks_now, by_role, tree, window_use
from bench.stats import Json, check
from bench.synthetic import SYNTHETIC_RANGE
from fabric_lab.runner import Lab
from fabricd import __version__
from fabricd.config.model import ReconcileConfig
from fabricd.log import configure_logging

DEMO_LAB, DEFAULT_INTERVAL_LAB, SCALE_LAB = "bid", "bidd", "bidx"
GOAL_PCT = 0.5  # of one core, the whole tree, nothing changing
SAMPLE_EVERY_S = 1.0
ROUTES_PER_INSTANCE = 5
H1_CONFIG = REPO / "labs" / "basic" / "h1" / "fabricd.yaml"
DEMO_CONFIG = H1_CONFIG  # h2's has the same reconcile interval
# The demo's instances: (host, the route each announces).
DEMO_ROUTES = (("h1", "10.201.31.0/24"), ("h1", "10.201.32.0/24"), ("h2", "10.201.33.0/24"))
TOOLS = ("nsenter", "lxd", "lxc", "vtysh")
OTHER_WORK = (
    "CPU-seconds are counted per process (utime + stime), so other work on the machine does not add "
    "to them; it can still change them a little (cache misses, a late wakeup doing more at once), "
    "and other engineers' labs shared this machine's two cores during the run (machine_noise)"
)


# --- measurement --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    wall: float
    use: WindowUse
    bgp_batches: int | None  # "bgp commands sent" lines fabricd logged in the window (None: no log)


CHANGE_LINE = b'"bgp commands sent"'


def measure_windows(
    roots: Mapping[str, Callable[[], int]],
    logs: Mapping[str, Path],
    windows: int,
    seconds: float,
    say: Callable[[str], None],
) -> dict[str, list[Window]]:
    """For each named root: `windows` consecutive windows of `seconds`, the tree sampled every second.

    roots give the tree's root pid when asked (a restarted agent would be a new root, and shows);
    logs are the agents' JSON logs, whose "bgp commands sent" lines show a window in which routes
    changed after all."""
    found: dict[str, list[Window]] = {name: [] for name in roots}
    for n in range(windows):
        samples: dict[str, list[dict[tuple[int, int], Proc]]] = {name: [] for name in roots}
        offsets = {name: _size(path) for name, path in logs.items()}
        began_ticks = boot_ticks_now()
        began = time.monotonic()
        end = began + seconds
        while True:
            for name, root in roots.items():
                samples[name].append(tree(root()))
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(min(SAMPLE_EVERY_S, end - now))
        wall = time.monotonic() - began
        for name in roots:
            batches = _count_since(logs[name], offsets[name]) if name in logs else None
            found[name].append(Window(wall, window_use(samples[name], began_ticks), batches))
        shown = ", ".join(f"{name} {pct(found[name][-1].use.total_ticks, wall):.3f}%" for name in roots)
        say(f"window {n + 1}/{windows} ({wall:.1f}s): {shown}")
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_since(path: Path, offset: int) -> int | None:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return sum(1 for line in log if CHANGE_LINE in line)
    except OSError:
        return None


def pct(ticks: int, wall: float) -> float:
    return 100.0 * ticks / TICKS / wall if wall > 0 else math.inf


def tree_figures(measured: Sequence[Window]) -> Json:
    """Per window and best/worst: the whole tree's % of one core, then each process's."""
    windows = [(w.wall, w.use) for w in measured]
    totals = [pct(use.total_ticks, wall) for wall, use in windows]
    worst = max(totals, default=math.inf)
    roles = sorted({r for _, use in windows for r in by_role(use.processes)})
    per_role: Json = {}
    for role in roles:
        values = [pct(by_role(use.processes).get(role, 0), wall) for wall, use in windows]
        per_role[role] = {
            "best_pct": round(min(values), 4),
            "worst_pct": round(max(values), 4),
            "per_window_pct": [round(v, 4) for v in values],
        }
    wakeups: Json = {}
    for wall, use in windows:
        for p in use.processes:
            wakeups.setdefault(p.role, []).append(round(p.switches / wall, 1))
    return {
        "whole_tree": {
            "best_pct": round(min(totals), 4) if totals else None,
            "worst_pct": round(worst, 4) if math.isfinite(worst) else None,
            "mean_pct": round(sum(totals) / len(totals), 4) if totals else None,
            "per_window_pct": [round(t, 4) for t in totals],
            "goal": {"worst_max_pct_of_one_core": GOAL_PCT},
            "meets_goal": check(worst if math.isfinite(worst) else None, GOAL_PCT),
        },
        "bgp_command_batches_per_window": [w.bgp_batches for w in measured],
        "per_process": per_role,
        "context_switches_per_s": wakeups,
        "windows": [
            {
                "seconds": round(wall, 2),
                "cpu_s": round(use.total_ticks / TICKS, 3),
                "processes": [
                    {
                        "role": p.role,
                        "pid": p.pid,
                        "cpu_s": round(p.cpu_ticks / TICKS, 3),
                        "ended_children_cpu_s": round(p.reaped_ticks / TICKS, 3),
                        "context_switches": p.switches,
                        "whole_window": p.whole_window,
                    }
                    for p in use.processes
                ],
                "processes_ended_in_window": [{"pid": pid, "role": role} for pid, role in use.ended],
            }
            for wall, use in windows
        ],
    }


def machine_noise(began: tuple[list[int], float]) -> Json:
    """The whole machine's busy CPU fraction since `began` (other labs share it) and the load."""
    before, t0 = began
    after = _proc_stat()
    busy = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(busy)
    idle = busy[3] + busy[4]
    return {
        "machine_busy_fraction": round(1 - idle / total, 3) if total else None,
        "seconds": round(time.monotonic() - t0, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "lab_namespaces_on_machine": sum(1 for n in _netns_names() if n.startswith("fl-")),
    }


def _proc_stat() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def _netns_names() -> list[str]:
    with contextlib.suppress(OSError):
        return os.listdir("/run/netns")
    return []


# --- the demo lab -------------------------------------------------------------------------------------


def with_interval(state_root: Path, interval: float) -> Path:
    """labs/basic.clab.yml and its directory copied under state_root, every host's fabricd.yaml with
    reconcile.interval set (nothing else changed); the copy's topology file."""
    target = state_root / f"topology-interval-{interval:g}"
    shutil.copytree(BASIC.parent / "basic", target / "basic")
    shutil.copy(BASIC, target / BASIC.name)
    for config in sorted((target / "basic").glob("*/fabricd.yaml")):
        document = yaml.safe_load(config.read_text())
        document["reconcile"] = {"interval": interval}
        config.write_text(yaml.safe_dump(document, sort_keys=False))
    return target / BASIC.name


def demo_part(
    state_root: Path, name: str, topology: Path, interval: float, windows: int, seconds: float, settle: float
) -> Json:
    lab = named_lab(topology, name, state_root)
    instances = demo_instances(name)
    progress(f"{name}: bringing up {name} (LXD, fabricd, ExaBGP, FRR; reconcile interval {interval:g}s)")
    lab.up()
    try:
        return _demo(lab, instances, interval, windows, seconds, settle)
    finally:
        progress(f"{name}: taking {name} down")
        for instance, host, _ in instances:
            with contextlib.suppress(Exception):
                lab.node(host).run(
                    ["lxc", "delete", "--force", instance], check=False, timeout=60, input_text=""
                )
        lab.down()


def demo_instances(lab_name: str) -> tuple[tuple[str, str, str], ...]:
    """(name, host, the route it announces); names carry the lab's name (LXD cgroups are machine-wide)."""
    return tuple((f"{lab_name}-{n}", host, route) for n, (host, route) in enumerate(DEMO_ROUTES, 1))


def _demo(
    lab: Lab,
    instances: Sequence[tuple[str, str, str]],
    interval: float,
    windows: int,
    seconds: float,
    settle: float,
) -> Json:
    name = lab.topology.name
    hosts = ("h1", "h2")
    for host in hosts:
        wait_sessions(lab.node(host))
    for instance, host, route in instances:
        node = lab.node(host)
        node.run(["lxc", "init", "busybox", instance], timeout=60, input_text="")
        node.run(
            ["lxc", "config", "device", "override", instance, "eth0", f"ipv4.routes.external={route}"],
            timeout=60,
            input_text="",
        )
        node.run(["lxc", "start", instance], timeout=60, input_text="")
    holder = lab.state().nodes["r1"].holder_pid
    if holder is None:
        raise RuntimeError("r1 has no holder process")
    fib = ProcFib(holder)
    routes = [route for _, _, route in instances]
    deadline = time.monotonic() + 60
    while fib.present(routes) != set(routes):
        if time.monotonic() > deadline:
            seen = sorted(fib.present(routes))
            raise RuntimeError(f"the demo instances' routes never all reached r1: {seen}")
        time.sleep(0.2)
    progress(f"{name}: {len(routes)} instance routes at r1; settling {settle:g}s")
    time.sleep(settle)

    def agent(host: str) -> Callable[[], int]:
        def pid() -> int:
            found = lab.state().nodes[host].agent_pid
            if found is None:
                raise RuntimeError(f"{host} has no fabricd")
            return found

        return pid

    noise = (_proc_stat(), time.monotonic())
    starts = {h: _exabgp_pids(agent(h)()) for h in hosts}
    roots = {h: agent(h) for h in hosts}
    logs = {h: lab.node(h).log_file("fabricd") for h in hosts}
    measured = measure_windows(roots, logs, windows, seconds, lambda m: progress(f"{name}: {m}"))
    still = fib.present(routes)
    return {
        "lab_name": name,
        "what": (
            f"labs/basic.clab.yml renamed {name}: real LXD, fabricd (`fabricd run` with the lab's config: "
            "BGP to r1 over IPv4 and IPv6, the VXLAN overlay and its nftables filter on, no DHCP/DNS "
            f"authority; reconcile interval {interval:g} s), ExaBGP, FRR; three running busybox "
            "instances with one ipv4.routes.external route each, at r1 before the windows; nothing "
            "changed during them. Every process under each host's fabricd counts (LXD's own daemon "
            "is not the agent's and does not)."
        ),
        "reconcile_interval_s": interval,
        "instances": [{"name": n, "host": h, "route": r} for n, h, r in instances],
        "per_host": {h: tree_figures(measured[h]) for h in hosts},
        "exabgp_restarted_during_windows": {h: starts[h] != _exabgp_pids(agent(h)()) for h in hosts},
        "routes_still_at_r1": sorted(still),
        "machine_noise": machine_noise(noise),
    }


def _exabgp_pids(root: int) -> list[int]:
    return sorted(p.pid for p in tree(root).values() if p.role == "exabgp")


# --- 1,000 instances ---------------------------------------------------------------------------------


def scale_part(state_root: Path, instances: int, windows: int, seconds: float, settle: float) -> Json:
    lab = named_lab(BASIC, SCALE_LAB, state_root, strip_fabric=True)
    progress(f"at_scale: bringing up {SCALE_LAB} (FRR; hosts without LXD or agent)")
    lab.up()
    try:
        return _scale(lab, instances, windows, seconds, settle)
    finally:
        progress(f"at_scale: taking {SCALE_LAB} down")
        lab.down()


def _scale(lab: Lab, instances: int, windows: int, seconds: float, settle: float) -> Json:
    h1 = lab.node("h1")
    args = [
        "--config",
        str(H1_CONFIG),
        "--state",
        str(h1.directory / "bench-idle-agent"),
        "--case",
        "best",
        "--instances",
        str(instances),
        "--routes-per-instance",
        str(ROUTES_PER_INSTANCE),
        "--no-loop-watch",
    ]
    driver = DriverLink(lab, "h1", args, "bench-idle-agent", module="bench.agent_driver")
    try:
        started = driver.call("start", timeout=120)
        driver.call("build", timeout=300)
        loaded = driver.call("load", timeout=300)
        acked = driver.expect("acked", timeout=300)
        progress(
            f"at_scale: {loaded['routes']} routes acked {float(acked['t']) - float(loaded['t_call']):.1f}s "
            f"after the snapshot was shown; settling {settle:g}s"
        )
        time.sleep(settle)
        root = _driver_pid(driver)
        before = driver.call("status", timeout=60)
        noise = (_proc_stat(), time.monotonic())
        say = lambda m: progress(f"at_scale: {m}")  # noqa: E731
        measured = measure_windows({"h1": lambda: root}, {"h1": driver.log_path}, windows, seconds, say)
        after = driver.call("status", timeout=60)
    finally:
        driver.close()
    return {
        "lab_name": SCALE_LAB,
        "what": (
            f"labs/basic.clab.yml renamed {SCALE_LAB} without LXD or agents; in h1, bench/agent_driver.py: "
            "the real fabricd Agent with the features `fabricd run` composes (route feature, ExaBGP as "
            "its child with the relay, the reconcile loop every 5 s, status snapshot, control socket), "
            f"the overlay off, whose LXD view is a synthetic snapshot of {instances} running instances "
            f"x {ROUTES_PER_INSTANCE} routes (bench/synthetic.py's best case: /32s in {SYNTHETIC_RANGE}) "
            "shown once and then unchanged; every route announced and acked to r1 (IPv4 and IPv6 "
            "sessions). What it leaves out: reading a real LXD of that size (the observer's periodic "
            "resync of 1,000 instances' JSON), dnsmasq and the overlay; the driver's own command task "
            "waits on stdin and its loop-stall watch is off."
        ),
        "instances": instances,
        "routes": loaded["routes"],
        "sessions_established_s": round(float(started["established_s"]), 3),
        "acked_all_s": round(float(acked["t"]) - float(loaded["t_call"]), 3),
        "per_host": {"h1": tree_figures(measured["h1"])},
        "exabgp_starts_before_after": [before.get("exabgp_starts"), after.get("exabgp_starts")],
        "passes_during_windows": int(after["passes"]) - int(before["passes"]),
        "machine_noise": machine_noise(noise),
    }


def _driver_pid(driver: DriverLink) -> int:
    """The agent driver's python (nsenter execs into it, so normally the Popen pid itself)."""
    pid = driver.proc.pid
    for proc in tree(pid).values():
        if proc.role == "fabricd":
            return proc.pid
    return pid


# --- report -------------------------------------------------------------------------------------------


def collect(args: argparse.Namespace, state_root: Path) -> Json:
    began, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    parts: Json = {}
    timing = (args.windows, args.seconds, args.settle)
    if not args.skip_demo:
        interval = float(yaml.safe_load(DEMO_CONFIG.read_text())["reconcile"]["interval"])
        parts["demo"] = demo_part(state_root, DEMO_LAB, BASIC, interval, *timing)
    if not args.skip_default_interval:
        default = ReconcileConfig().interval
        topology = with_interval(state_root, default)
        parts["demo_default_interval"] = demo_part(
            state_root, DEFAULT_INTERVAL_LAB, topology, default, *timing
        )
    if not args.skip_scale:
        parts["at_scale"] = scale_part(state_root, args.instances, args.windows, args.seconds, args.settle)
    goals: Json = {}
    for part, section in parts.items():
        for host, figures in section["per_host"].items():
            whole = figures["whole_tree"]
            goals[f"{part}.{host}.whole_tree"] = {
                "worst_pct": whole["worst_pct"],
                "goal_max_pct": GOAL_PCT,
                "meets_goal": whole["meets_goal"],
            }
    skipped = [
        part
        for part, skip in (
            ("demo", args.skip_demo),
            ("demo_default_interval", args.skip_default_interval),
            ("at_scale", args.skip_scale),
        )
        if skip
    ]
    labs = [named_lab(BASIC, name, state_root) for name in (DEMO_LAB, DEFAULT_INTERVAL_LAB, SCALE_LAB)]
    left = [ns for lab in labs for ns in leftover_namespaces(lab)]
    return {
        "benchmark": "fabricd idle cost",
        "fabricd_version": __version__,
        "started_utc": started,
        "seconds": round(time.monotonic() - began, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "method": {
            "what": (
                "CPU-seconds (utime + stime from /proc/<pid>/stat, every thread) of the agent's whole "
                "process tree: the fabricd process and every descendant, found through "
                "/proc/<pid>/task/*/children and sampled every second; processes keyed by (pid, start "
                "time). A process alive at a window's end counts its CPU since the window began (or "
                "since its birth inside the window); one that ended inside the window counts through "
                "its parent's cutime + cstime (the kernel adds a reaped child's CPU there), so short-"
                "lived helpers are counted. % of one core = CPU-seconds / window seconds x 100. "
                f"Clock tick {1 / TICKS:g} s. context_switches_per_s: voluntary + involuntary, "
                "every thread, a proxy for wakeups."
            ),
            "changes": (
                'bgp_command_batches_per_window: the "bgp commands sent" lines each agent logged '
                "during the window (routes announced or withdrawn); 0 in every window means nothing "
                "changed for BGP"
            ),
            "other_work": OTHER_WORK,
            "windows": args.windows,
            "window_s": args.seconds,
            "settle_s": args.settle,
            "sample_every_s": SAMPLE_EVERY_S,
        },
        **parts,
        "skipped_sections": skipped,
        "goals": goals,
        "all_goals_met": not skipped and bool(goals) and all(g["meets_goal"] for g in goals.values()),
        "namespaces_left_behind": left,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"goal: the whole tree <= {GOAL_PCT} % of one core in every window, per host",
    )
    parser.add_argument("--windows", type=int, default=3, help="measurement windows per part")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window")
    parser.add_argument("--settle", type=float, default=45.0, help="quiet seconds before the first window")
    parser.add_argument("--instances", type=int, default=1000, help="synthetic instances (at_scale)")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo lab as configured")
    parser.add_argument(
        "--skip-default-interval", action="store_true", help="leave out the demo lab at the default interval"
    )
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.windows < 1 or args.seconds <= 0 or args.instances < 1:
        parser.error("--windows, --seconds and --instances must be positive")
    if os.geteuid() != 0:
        print("bench.idle needs root (network namespaces, LXD): run it with sudo", file=sys.stderr)
        return 2
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench.idle needs {', '.join(missing)} (scripts/setup.sh installs them)", file=sys.stderr)
        return 2
    configure_logging("warning", "console")
    report = run_reporting("bench-idle-", args.keep_logs, lambda root: collect(args, root))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
