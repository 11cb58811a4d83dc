"""How long `plan_dnsmasq` takes on a large overlay: 10,000 instances by default, a quarter with a
stable address, a quarter with a pool lease, half with none (every one of those gets a slot).

    .venv/bin/python -m bench.dnsmasq_plan [--instances N] [--runs K]

Prints one JSON document. No root, no lab. `cold` is the first run in the process (the address
parse cache empty), `warm` the later runs (the planner runs again on every LXD change).
"""

from __future__ import annotations

import argparse
import json
import time

from bench.stats import Json, check, distribution
from fabric_lab.lxd_builders import large_overlay_config, large_overlay_snapshot
from fabricd.authority.dnsmasq_plan import plan_dnsmasq

GOAL_S = 1.0


def measure(instances: int, runs: int) -> Json:
    snap, cfg = large_overlay_snapshot(instances), large_overlay_config()
    samples, plans = [], []
    for _ in range(runs):
        started = time.perf_counter()
        plans.append(plan_dnsmasq(snap, cfg, interface="fd-fabric0", mtu=1450))
        samples.append(time.perf_counter() - started)
    plan = plans[-1]
    cold, warm = samples[0], distribution(samples[1:])
    return {
        "instances": instances,
        "reservations": len(plan.reservations),
        "with_address": sum(r.address is not None for r in plan.reservations),
        "cold_s": round(cold, 4),
        "warm": warm,
        "goal_s": GOAL_S,
        "meets_goal": check(cold, GOAL_S) and check(warm.get("max"), GOAL_S),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps(measure(args.instances, max(2, args.runs)), indent=2))


if __name__ == "__main__":
    main()
