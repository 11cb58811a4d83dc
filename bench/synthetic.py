"""Synthetic observed state at scale, and the planner's CPU figures on it.

The snapshot is the unit tests' own `large_snapshot` (fabric_lab/lxd_builders.py): N running
instances, each with k /32 NIC external routes in 100.64.0.0/10. Its OVN networks are turned into
bridges so every route is a bridge route whose next hop is the host's underlay address: with h1's
config that is 10.99.1.11, which r1 in labs/basic.clab.yml can install.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from bench.stats import Json, check, distribution
from fabricd.config import FabricConfig, load_config_text
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord
from fabricd.routes.incremental import IncrementalPlanner
from fabricd.routes.planner import plan_routes

REPO = Path(__file__).resolve().parents[1]
H1_CONFIG = REPO / "labs" / "basic" / "h1" / "fabricd.yaml"
SYNTHETIC_RANGE = "100.64.0.0/10"  # large_snapshot's routes start at 100.64.0.0
MOVED_BASE = int(IPv4Address("100.120.0.0"))  # where an "instance event" moves one instance's routes

COLD_GOAL_S = 2.0
EVENT_GOAL_MS = 5.0


def bench_config(path: Path = H1_CONFIG, allowed: Sequence[str] = (SYNTHETIC_RANGE,)) -> FabricConfig:
    """A node's fabricd.yaml with its routes.allowed_ranges replaced."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc.setdefault("routes", {})["allowed_ranges"] = list(allowed)
    return load_config_text(yaml.safe_dump(doc), str(path))


def synthetic_snapshot(instances: int, routes_each: int) -> LXDSnapshot:
    from fabric_lab.lxd_builders import large_snapshot  # plain builders, no hypothesis

    last = int(IPv4Address("100.64.0.0")) + instances * routes_each
    if last > MOVED_BASE:
        raise ValueError(f"{instances} x {routes_each} routes do not fit below {IPv4Address(MOVED_BASE)}")
    snapshot = large_snapshot(instances, routes_each)
    networks = tuple(_as_bridge(n, i) for i, n in enumerate(snapshot.networks))
    return dataclasses.replace(snapshot, networks=networks)


def _as_bridge(network: NetworkRecord, index: int) -> NetworkRecord:
    if network.type != "ovn":
        return network
    config = FrozenMap({"ipv4.address": f"10.{index}.0.1/16"})
    return dataclasses.replace(network, type="bridge", config=config, ovn_chassis=None)


def moved(record: InstanceRecord, k: int, routes_each: int) -> InstanceRecord:
    """The instance with its external routes replaced by k-th fresh block (an LXD config change)."""
    start = MOVED_BASE + k * routes_each
    routes = ",".join(str(IPv4Network((start + r, 32))) for r in range(routes_each))
    nic = record.nics[0]
    config = FrozenMap({**nic.config, "ipv4.routes.external": routes})
    return dataclasses.replace(record, nics=(dataclasses.replace(nic, config=config), *record.nics[1:]))


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call, with the collector settled first."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def planner_figures(
    instances: int, routes_each: int, updates: int, cold_runs: int, progress: Callable[[str], None]
) -> Json:
    """Cold plan_routes and IncrementalPlanner.update, then one-instance updates on a warm planner."""
    config = bench_config()
    snapshot = synthetic_snapshot(instances, routes_each)
    plan = plan_routes(snapshot, config)
    cold_plan: list[tuple[float, float]] = []
    cold_update: list[tuple[float, float]] = []
    for run in range(cold_runs):
        progress(f"planner: cold run {run + 1}/{cold_runs}")
        cold_plan.append(_timed(lambda: plan_routes(snapshot, config)))
        cold_update.append(_timed(lambda: IncrementalPlanner(config).update(snapshot)))
    planner = IncrementalPlanner(config)
    planner.update(snapshot)
    progress(f"planner: {updates} one-instance changes, each undone (2 updates per change)")
    records = list(snapshot.instances)
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    gc.collect()
    for k in range(updates):
        i = k * 137 % len(records)
        original = records[i]
        for record in (moved(original, k, routes_each), original):
            records[i] = record
            changed = dataclasses.replace(snapshot, instances=tuple(records))
            cpu, wall = time.process_time(), time.perf_counter()
            planner.update(changed)
            cpu_ms.append((time.process_time() - cpu) * 1000)
            wall_ms.append((time.perf_counter() - wall) * 1000)
    final = planner.update(snapshot)
    next_hops = sorted({str(r.next_hop) for r in plan.routes})
    cold_update_cpu = distribution([c for c, _ in cold_update])
    event_cpu = distribution(cpu_ms, "ms", 3)
    return {
        "instances": instances,
        "routes_per_instance": routes_each,
        "routes_planned": len(plan.routes),
        "refused": len(plan.refused),
        "withheld": len(plan.withheld),
        "next_hops": next_hops,
        "incremental_equals_plan_routes": final == plan_routes(snapshot, config),
        "cold_incremental_update": {
            "what": "IncrementalPlanner(config).update(snapshot) on a fresh planner (fabricd's path)",
            "cpu_s": cold_update_cpu,
            "wall_s": distribution([w for _, w in cold_update]),
            "goal": {"cpu_p50_max_s": COLD_GOAL_S},
            "meets_goal": check(cold_update_cpu["p50"], COLD_GOAL_S),
        },
        "cold_plan_routes": {
            "what": "plan_routes(snapshot, config), the from-scratch planner, for comparison",
            "cpu_s": distribution([c for c, _ in cold_plan]),
            "wall_s": distribution([w for _, w in cold_plan]),
        },
        "one_instance_event_update": {
            "what": (
                "IncrementalPlanner.update after one instance record was replaced (its "
                f"{routes_each} routes moved to new prefixes, then moved back), warm planner"
            ),
            "cpu_ms": _without_samples(event_cpu),
            "wall_ms": _without_samples(distribution(wall_ms, "ms", 3)),
            "goal": {"cpu_p50_max_ms": EVENT_GOAL_MS},
            "meets_goal": check(event_cpu["p50"], EVENT_GOAL_MS),
            "p99_within_goal": check(event_cpu["p99"], EVENT_GOAL_MS),
        },
    }


def _without_samples(figure: Json) -> Json:
    return {k: v for k, v in figure.items() if k != "samples"}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.synthetic`: the planner figures as JSON, in a fresh process of their own."""
    parser = argparse.ArgumentParser(description="planner CPU figures on synthetic observed state")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--routes-per-instance", type=int, default=5)
    parser.add_argument("--event-updates", type=int, default=250)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args(argv)
    figures = planner_figures(
        args.instances,
        args.routes_per_instance,
        args.event_updates,
        args.cold_runs,
        lambda message: print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True),
    )
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
