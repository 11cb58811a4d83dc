"""Synthetic observed state at scale, and the planner's CPU figures on it.

Two cases of N running instances with k NIC external routes each (10,000 x 5 = 50,000 routes):

- best (`synthetic_snapshot`): the unit tests' own `large_snapshot` (fabric_lab/lxd_builders.py),
  /32s in 100.64.0.0/10. Its OVN networks are turned into bridges so every route is a bridge route
  whose next hop is the host's underlay address: with h1's config 10.99.1.11, which r1 in
  labs/basic.clab.yml can install. One next hop, no attributes: fabricd's bulk lines carry 1,000
  prefixes each.
- worst (`worst_snapshot`): 500 OVN networks, each with its own next hop (its router's uplink
  address), its own communities and MED; 400 carry IPv4 routes of every length /24../32 in
  100.64.0.0/10, 100 carry IPv6 routes /48../64 in fd64::/16 (a fifth of the routes). Prefixes are
  handed out so that neighbours in prefix order belong to different networks. Every UPDATE can
  carry only the routes of one network. The next hops lie in subnets on r1's link to h1
  (WORST_V4_HOP_SUBNET, which the benchmark adds to both ends, and fd00:99:1::/64).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import yaml

from bench.stats import Json, check, distribution
from fabricd.config import FabricConfig, load_config_text
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord, NicRecord
from fabricd.routes.attributes import COMMUNITIES, MED
from fabricd.routes.incremental import IncrementalPlanner
from fabricd.routes.planner import plan_routes

REPO = Path(__file__).resolve().parents[1]
H1_CONFIG = REPO / "labs" / "basic" / "h1" / "fabricd.yaml"
SYNTHETIC_RANGE = "100.64.0.0/10"  # large_snapshot's routes start at 100.64.0.0
MOVED_BASE = int(IPv4Address("100.120.0.0"))  # where an "instance event" moves one instance's routes

SYNTHETIC_RANGE6 = "fd64::/16"  # the worst case's IPv6 routes

WORST_NETWORKS = 500
WORST_V6_NETWORKS = 100  # the last 100 networks carry IPv6 routes
WORST_V4_HOP_SUBNET = "10.98.0.0/22"  # added to r1's and h1's eth1 by the benchmark
WORST_V4_HOP_BASE = int(IPv4Address("10.98.0.16"))
WORST_V6_HOP_BASE = int(IPv6Address("fd00:99:1::1:0"))  # inside the r1-h1 link's fd00:99:1::/64
WORST_V4_LENGTHS = tuple(range(24, 33))
WORST_V6_LENGTHS = tuple(range(48, 65))
UPLINK = "UPLINK"
MEMBER = "m1"
CASES = ("best", "worst")

COLD_GOAL_S = 1.5  # the cold reconcile's goal (issue 10); the planner alone is a part of it
EVENT_GOAL_MS = 5.0


def bench_config(
    path: Path = H1_CONFIG, allowed: Sequence[str] = (SYNTHETIC_RANGE,), agent_state: Path | None = None
) -> FabricConfig:
    """A node's fabricd.yaml with its routes.allowed_ranges replaced; with `agent_state`, also set
    up for an agent of its own: no overlay, state and control socket under that directory."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc.setdefault("routes", {})["allowed_ranges"] = list(allowed)
    if agent_state is not None:
        doc["overlay"] = {"enabled": False}
        doc["daemon"] = {"state_dir": str(agent_state)}
        doc["control"] = {"socket": str(agent_state / "fabricd.sock")}
    return load_config_text(yaml.safe_dump(doc), str(path))


def case_snapshot(case: str, instances: int, routes_each: int) -> LXDSnapshot:
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")
    return (worst_snapshot if case == "worst" else synthetic_snapshot)(instances, routes_each)


def worst_v4_next_hop(network: int) -> IPv4Address:
    return IPv4Address(WORST_V4_HOP_BASE + network)


def worst_v6_next_hop(network: int) -> IPv6Address:
    return IPv6Address(WORST_V6_HOP_BASE + network)


class _Prefixes:
    """Prefixes handed out in order from one range, each aligned to its length, lengths in turn."""

    def __init__(self, within: str, lengths: Sequence[int]) -> None:
        network = ip_network(within)
        self.kind = IPv6Network if network.version == 6 else IPv4Network
        self.width = network.max_prefixlen
        self.cursor, self.end = int(network.network_address), int(network.broadcast_address)
        self.lengths, self.n = lengths, 0
        self.within = within

    def take(self) -> str:
        length = self.lengths[self.n % len(self.lengths)]
        self.n += 1
        size = 1 << (self.width - length)
        start = -(-self.cursor // size) * size
        if start + size - 1 > self.end:
            raise ValueError(f"{self.n} prefixes do not fit in {self.within}")
        self.cursor = start + size
        return str(self.kind((start, length)))


def worst_snapshot(instances: int, routes_each: int) -> LXDSnapshot:
    """500 OVN networks with a next hop, communities and a MED each; mixed lengths, IPv4 and IPv6."""
    uplink = NetworkRecord("default", UPLINK, "physical", True, FrozenMap({
        "ipv4.routes": SYNTHETIC_RANGE, "ipv6.routes": SYNTHETIC_RANGE6,
    }))  # fmt: skip
    networks = [uplink]
    first_v6 = WORST_NETWORKS - WORST_V6_NETWORKS
    for n in range(WORST_NETWORKS):
        hop = (
            ("volatile.network.ipv6.address", str(worst_v6_next_hop(n)))
            if n >= first_v6
            else ("volatile.network.ipv4.address", str(worst_v4_next_hop(n)))
        )
        config = {
            "network": UPLINK, "ipv4.address": "none", "ipv6.address": "none", hop[0]: hop[1],
            COMMUNITIES: f"65000:{n} 65100:{n % 7}", MED: str(10 * n),
        }  # fmt: skip
        networks.append(NetworkRecord("default", f"w{n}", "ovn", True, FrozenMap(config), MEMBER))
    v4, v6 = _Prefixes(SYNTHETIC_RANGE, WORST_V4_LENGTHS), _Prefixes(SYNTHETIC_RANGE6, WORST_V6_LENGTHS)
    routes: list[list[str]] = [[] for _ in range(instances)]
    for k in range(instances * routes_each):  # route k belongs to instance k % instances
        i = k % instances
        routes[i].append((v6 if i % WORST_NETWORKS >= first_v6 else v4).take())
    records = []
    for i, own in enumerate(routes):
        key = "ipv6.routes.external" if i % WORST_NETWORKS >= first_v6 else "ipv4.routes.external"
        nic = NicRecord("eth0", FrozenMap({"network": f"w{i % WORST_NETWORKS}", key: ",".join(own)}))
        records.append(InstanceRecord("default", f"c{i}", "container", "Running", MEMBER, (nic,)))
    return LXDSnapshot(MEMBER, True, ("default",), tuple(networks), tuple(records))


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


def movable(snapshot: LXDSnapshot) -> list[int]:
    """Indices of the instances whose routes `moved` can move (those with IPv4 external routes)."""
    return [i for i, r in enumerate(snapshot.instances) if "ipv4.routes.external" in r.nics[0].config]


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call, with the collector settled first."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def planner_figures(
    case: str, instances: int, routes_each: int, updates: int, cold_runs: int, progress: Callable[[str], None]
) -> Json:
    """Cold plan_routes and IncrementalPlanner.update, then one-instance updates on a warm planner."""
    config = bench_config(allowed=(SYNTHETIC_RANGE, SYNTHETIC_RANGE6))
    snapshot = case_snapshot(case, instances, routes_each)
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
    candidates = movable(snapshot)
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    gc.collect()
    for k in range(updates):
        i = candidates[k * 137 % len(candidates)]
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
        "case": case,
        "instances": instances,
        "routes_per_instance": routes_each,
        "routes_planned": len(plan.routes),
        "refused": len(plan.refused),
        "withheld": len(plan.withheld),
        "next_hops": len(next_hops),
        "next_hops_first": next_hops[:3],
        "attribute_sets": len({r.attributes for r in plan.routes}),
        "incremental_equals_plan_routes": final == plan_routes(snapshot, config),
        "cold_incremental_update": {
            "what": (
                "IncrementalPlanner(config).update(snapshot) on a fresh planner (fabricd's path): the "
                "planner's part of the cold reconcile, whose goal it carries too"
            ),
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
    parser.add_argument("--case", choices=CASES, default="best")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--routes-per-instance", type=int, default=5)
    parser.add_argument("--event-updates", type=int, default=250)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args(argv)
    figures = planner_figures(
        args.case,
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
