"""fabricd route benchmark: event latencies on a real lab, and scale to 50,000 routes.

    sudo .venv/bin/python -m bench.routes [--rounds N] [--kill-rounds N] [--skip-scale]
        [--skip-latency] [--instances 10000] [--routes-per-instance 5]

Prints one JSON document on stdout; progress goes to stderr. See bench/README.md for each figure.
Every lab runs in network namespaces built by fabric_lab.runner under a fresh state directory in
/tmp and bench-only names (bench-rt, bench-scale), and is always taken down.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.labs import REPO, progress, run_reporting
from bench.stats import Json
from bench.synthetic import CASES
from fabricd import __version__
from fabricd.log import configure_logging

TOOLS = ("nsenter", "ip", "lxd", "lxc", "vtysh", "tcpdump", "dpkg-deb")
BENCH_LABS = ("bench-rt", "bench-scale")


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return (
            "bench.routes needs root: it builds network namespaces, runs LXD, FRR and ExaBGP in them and "
            "reads their kernel tables. Run it as root from the repository root, e.g. "
            "`sudo .venv/bin/python -m bench.routes`."
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"bench.routes needs {', '.join(missing)} (run scripts/setup.sh)"
    return None


def _version(command: Sequence[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(command), capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else None
    return None


def _frr_version() -> str | None:
    out = _version(["dpkg-query", "-W", "-f=${Version}", "frr"])
    return out or None


def _other_namespaces() -> int:
    """Namespaces of other labs on the machine (other engineers' runs add CPU noise)."""
    ours = tuple(f"fl-{name}-" for name in BENCH_LABS)
    with contextlib.suppress(OSError):
        return sum(1 for p in Path("/run/netns").iterdir() if not p.name.startswith(ours))
    return 0


def machine() -> Json:
    return {
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fabricd": __version__,
        "exabgp": importlib.metadata.version("exabgp"),
        "lxd": _version(["lxd", "--version"]),
        "frr": _frr_version(),
        "other_lab_namespaces_at_start": _other_namespaces(),
    }


def _at(report: Json, *path: str) -> Any:
    node: Any = report
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def headline(report: Json) -> Json:
    """The main figures in one place (each is also in its section, with its goal)."""
    lat = ("latency",)
    side = ("scale", "side_by_side")
    pl = ("scale", "planner")
    return {
        "start_to_fib_p50_s": _at(report, *lat, "instance_start_to_fib", "from_event", "p50"),
        "start_to_fib_p99_s": _at(report, *lat, "instance_start_to_fib", "from_event", "p99"),
        "stop_to_withdrawn_p50_s": _at(report, *lat, "instance_stop_to_withdrawn", "from_event", "p50"),
        "sigkill_to_all_withdrawn_max_s": _at(
            report, *lat, "fabricd_sigkill_to_all_withdrawn", "seconds", "max"
        ),
        "exabgp_sigkill_to_all_back_p50_s": _at(report, *lat, "exabgp_sigkill_to_all_back", "seconds", "p50"),
        "hung_to_all_withdrawn_p50_s": _at(report, *lat, "fabricd_hung_to_all_withdrawn", "seconds", "p50"),
        "speaker_floor_announce_p50_s": _at(
            report, *lat, "baselines", "speaker_floor", "announce_to_fib", "total", "p50"
        ),
        "start_minus_speaker_floor_s": _at(report, *lat, "instance_start_to_fib", "minus_speaker_floor_s"),
        "start_ratio_vs_lxd_bgp_published_floor": _at(
            report, *lat, "instance_start_to_fib", "ratio_vs_lxd_bgp_published_floor"
        ),
        "latency_timeouts": _at(report, *lat, "timeouts"),
        "planner_cold_update_cpu_p50_s": {
            case: _at(report, *pl, case, "cold_incremental_update", "cpu_s", "p50") for case in CASES
        },
        "one_instance_update_cpu_p50_ms": {
            case: _at(report, *pl, case, "one_instance_event_update", "cpu_ms", "p50") for case in CASES
        },
        "install_all_routes_to_fib_s": _at(report, *side, "fib_all_installed_s"),
        "cold_reconcile_cpu_s": _at(report, *side, "cold_reconcile_cpu_s"),
        "event_at_scale_to_fib_p50_s": _at(report, *side, "event_at_scale_to_fib_p50_s"),
        "agent_peak_rss_mb": _at(report, *side, "agent_peak_rss_mb"),
        "exabgp_rss_mb": _at(report, *side, "exabgp_rss_mb"),
    }


def cpu_times() -> list[int]:
    """The machine's CPU counters from /proc/stat: user nice system idle iowait irq softirq steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return [int(f) for f in fields]


def noise(before: list[int], after: list[int]) -> Json:
    """How busy the whole machine was during a phase (other engineers' labs included)."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    idle = delta[3] + delta[4]
    return {
        "machine_cpu_busy_fraction": round(1 - idle / total, 3),
        "steal_fraction": round(delta[7] / total, 3),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "other_lab_namespaces_end": _other_namespaces(),
    }


def measured(phase: Callable[[], Json]) -> Json:
    """Run a phase and attach the machine's noise over it."""
    before = cpu_times()
    result = phase()
    result["machine_noise"] = noise(before, cpu_times())
    return result


def goals(report: Json) -> Json:
    """Every figure with a goal, its verdict, in one place."""
    found: Json = {}
    for section in ("latency", "scale"):
        part = report.get(section)
        if isinstance(part, dict):
            for name, figure in _walk(part, section):
                found[name] = figure
    return found


def _walk(node: Any, path: str) -> Iterator[tuple[str, bool]]:
    if isinstance(node, dict):
        if "meets_goal" in node:
            yield path, bool(node["meets_goal"])
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.routes", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="start/stop rounds (and speaker-floor rounds)")
    parser.add_argument(
        "--kill-rounds", type=int, default=10, help="rounds of each: fabricd SIGKILL, ExaBGP SIGKILL, hung"
    )
    parser.add_argument("--skip-latency", action="store_true", help="no real-LXD latency lab")
    parser.add_argument("--skip-scale", action="store_true", help="no planner figures and no 50k install")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--routes-per-instance", type=int, default=5)
    parser.add_argument(
        "--event-updates", type=int, default=250, help="one-instance changes (2 updates each)"
    )
    parser.add_argument("--cold-runs", type=int, default=5, help="cold planner runs")
    parser.add_argument("--keep-logs", action="store_true", help="keep the labs' logs under the state dir")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.kill_rounds < 1 or args.instances < 1 or args.routes_per_instance < 1:
        parser.error("counts must be positive")
    return args


def planner_figures(args: argparse.Namespace, case: str) -> Json:
    """bench/synthetic.py in a fresh process: a clean heap for the CPU figures.

    It also keeps this process small: the lab drivers it launches inherit its size as ru_maxrss.
    """
    command = [sys.executable, "-m", "bench.synthetic", "--case", case, "--instances", str(args.instances)]
    command += ["--routes-per-instance", str(args.routes_per_instance)]
    command += ["--event-updates", str(args.event_updates), "--cold-runs", str(args.cold_runs)]
    out = subprocess.run(command, stdout=subprocess.PIPE, check=True, cwd=REPO).stdout
    figures: Json = json.loads(out)
    return figures


def run(args: argparse.Namespace, state_root: Path) -> Json:
    from bench.latency import latency_phase
    from bench.scale import scale_phase

    started = time.monotonic()
    report: Json = {
        "benchmark": "fabricd routes (bench/routes.py)",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {
            "rounds": args.rounds,
            "kill_rounds": args.kill_rounds,
            "instances": args.instances,
            "routes_per_instance": args.routes_per_instance,
            "event_updates": args.event_updates * 2,
            "cold_runs": args.cold_runs,
        },
        "percentiles": "linear interpolation between closest ranks; with n=20 p99 is close to max",
        "units": "seconds unless a key or a figure's unit says otherwise",
    }
    planner: Json = {}
    if not args.skip_scale:  # CPU figures first, while no lab runs on the machine
        for case in CASES:
            progress(f"planner {case}: {args.instances} x {args.routes_per_instance} routes, no lab")
            planner[case] = measured(functools.partial(planner_figures, args, case))
    report["latency"] = (
        {"skipped": True}
        if args.skip_latency
        else measured(lambda: latency_phase(args.rounds, args.kill_rounds, state_root, progress))
    )
    report["scale"] = (
        {"skipped": True}
        if args.skip_scale
        else {
            "planner": planner,
            **measured(lambda: scale_phase(args.instances, args.routes_per_instance, state_root, progress)),
        }
    )
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["headline"] = headline(report)
    report["goals"] = goals(report)
    report["skipped_sections"] = [name for name in ("latency", "scale") if report[name].get("skipped")]
    # A skipped section met no goal: the verdict is only true for a full run.
    report["all_goals_met"] = (
        not report["skipped_sections"] and bool(report["goals"]) and all(report["goals"].values())
    )
    return report


def leftovers() -> list[str]:
    with contextlib.suppress(OSError):
        return sorted(
            p.name
            for p in Path("/run/netns").iterdir()
            if p.name.startswith(("fl-bench-rt-", "fl-bench-scale-"))
        )
    return []


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (reason := unavailable()) is not None:
        print(reason, file=sys.stderr)
        return 2
    os.chdir(REPO)  # lab nodes run the driver with the benchmark's working directory
    configure_logging("warning", "console")  # fabricd's loggers write to stderr; stdout is the JSON
    try:
        report = run_reporting("bench-routes-", args.keep_logs, lambda state_root: run(args, state_root))
    finally:
        left = leftovers()
        if left:
            progress(f"WARNING: namespaces left behind: {', '.join(left)}")
    report["namespaces_left_behind"] = left
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
