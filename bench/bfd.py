"""fabricd with BFD: a cut link drops the host's routes at the router, BFD against the hold time.

    sudo .venv/bin/python -m bench.bfd [--rounds 10] [--limit 10] [--keep-logs]

Prints one JSON document on stdout; progress goes to stderr. labs/bfd.clab.yml renamed "bbfd"
(namespaces fl-bbfd-*): FRR 8.4 with bfdd on r1; h1's fabricd runs BFD (BIRD, 100 ms x 3) on its
IPv4 and IPv6 sessions, h2's none (hold time 3 s, keepalives every second). Each host has one
busybox instance announcing one IPv4 and one IPv6 route. A round: everything up (BFD Up on both
sides, r1's BGP sessions tied to it, the four routes in r1's kernel table), then r1's host-facing
links are cut (nftables in r1's namespace drops everything on eth1 and eth2; the links stay up) and
r1's table is polled every 5 ms until both hosts' routes are gone, or --limit seconds. So each
round measures both ways in the same cut. A host's figure for a round is the time until the last of
its routes left; a route still there at --limit is a timed-out round (an infinite sample, never
dropped). The cut is removed and the next round waits until everything is up again.

Then --bird-kill-rounds SIGKILLs of h1's BIRD: how long h1's route was away from r1, and whether
BFD came back on both sides (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pyroute2 import NetNS

from bench.labs import (
    REPO,
    leftover_namespaces,
    named_lab,
    progress,
    report_head,
    restart_agent,
    run_lab_benchmark,
    stop_agent,
)
from bench.stats import TIMED_OUT, Json, best_median_worst, check
from fabric_lab.bfd_lab import (
    H1_ROUTES,
    H1_V4,
    H1_V6,
    H2_ROUTES,
    bfd_states,
    bgp_prefixes,
    gone_after,
    kill_and_watch,
    launch_both,
    links_cut,
    router_bfd,
    status,
    wait_all_up,
)
from fabric_lab.runner import Lab

LAB = "bbfd"
TOPOLOGY = REPO / "labs" / "bfd.clab.yml"
TOOLS = ("nsenter", "lxd", "lxc", "vtysh", "nft", "bird")
BFD_GOAL_S = 0.6  # 100 ms x 3 detection, FRR's withdrawal and a loaded machine's margin
HOLD_TIME_S = 3.0
SETTLE_TIMEOUT_S = 60.0
CUT_TABLE = "bbfd_cut"
KILL_WATCHED = "10.201.1.0/24"
H1_ADDRESSES = (H1_V4, H1_V6)
BFD_BACK_S = 15.0


def collect(args: argparse.Namespace, state_root: Path) -> Json:
    began, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    lab = named_lab(TOPOLOGY, LAB, state_root)
    progress(f"bringing up {LAB} (FRR with bfdd, LXD, fabricd with BIRD on h1)")
    lab.up()
    try:
        launch_both(lab, LAB)
        rounds = [one_round(lab, n, args.limit) for n in range(1, args.rounds + 1)]
        kills = [bird_kill_round(lab, n) for n in range(1, args.bird_kill_rounds + 1)]
    finally:
        progress(f"taking {LAB} down")
        for host, instance in (("h1", f"{LAB}-w1"), ("h2", f"{LAB}-w2")):
            with contextlib.suppress(Exception):
                lab.node(host).run(["lxc", "delete", "--force", instance], check=False, timeout=60)
        lab.down()
    return report(args, rounds, kills, started, began, lab)


def one_round(lab: Lab, number: int, limit: float) -> Json:
    """One cut of both hosts' links; every figure of the round, timed-out ones as None."""
    r1, h1 = lab.node("r1"), lab.node("h1")
    try:
        wait_all_up(lab, SETTLE_TIMEOUT_S)
    except AssertionError as exc:
        progress(f"round {number}: not settled before the cut: {exc}")
        return {"round": number, "settled": False, "why": str(exc)[:500], "gone_s": {}}
    watched = {**H1_ROUTES, **H2_ROUTES}
    load = os.getloadavg()[0]
    with NetNS(r1.netns_name) as ns:
        if not set(watched) <= bgp_prefixes(ns):
            return {"round": number, "settled": False, "why": "routes missing at r1", "gone_s": {}}
        with links_cut(r1, CUT_TABLE) as cut:
            gone = gone_after(ns, watched, cut, limit)
            seen_down = set(bfd_states(status(h1)).values())
    progress(
        f"round {number}: "
        + ", ".join(f"{p} {gone[p]:.3f}s" if p in gone else f"{p} still there" for p in watched)
    )
    return {
        "round": number,
        "settled": True,
        "gone_s": {p: round(gone[p], 4) if p in gone else None for p in watched},
        "h1_bfd_states_after": sorted(seen_down),
        "load_1min_before": round(load, 2),
    }


def bird_kill_round(lab: Lab, number: int) -> Json:
    """h1's BIRD SIGKILLed: how long h1's IPv4 route was away from r1 (if it left), and whether BFD
    was Up again on both sides within BFD_BACK_S. If not, h1's fabricd is restarted so the next
    round starts with BFD up (sessions that return after a second get their BFD session back)."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    try:
        wait_all_up(lab, SETTLE_TIMEOUT_S)
    except AssertionError as exc:
        progress(f"BIRD kill {number}: not settled before the kill: {exc}")
        return {"round": number, "settled": False, "why": str(exc)[:500]}
    pid = status(h1)["bfd_daemon"]["pid"]
    with NetNS(r1.netns_name) as ns:
        gone, back = kill_and_watch(ns, pid, KILL_WATCHED)
    deadline = time.monotonic() + BFD_BACK_S
    both_up = False
    while not both_up and time.monotonic() < deadline:
        time.sleep(0.2)
        at_router = {p: router_bfd(r1).get(p, {}).get("status") for p in H1_ADDRESSES}
        both_up = set(bfd_states(status(h1)).values()) == {"Up"} and set(at_router.values()) == {"up"}
    lost_at_router = sorted(p for p in H1_ADDRESSES if p not in router_bfd(r1))
    if not both_up:
        progress(
            f"BIRD kill {number}: BFD not back (r1 has none for {lost_at_router}); restarting h1's fabricd"
        )
        stop_agent(lab, "h1")
        restart_agent(lab, "h1")
    away = None if gone is None else (back - gone if back is not None else None)
    progress(f"BIRD kill {number}: route left {gone}, back {back}, BFD up again {both_up}")
    return {
        "round": number,
        "settled": True,
        "route_left_s": None if gone is None else round(gone, 4),
        "route_back_s": None if back is None else round(back, 4),
        "route_away_s": None if away is None else round(away, 4),
        "bfd_up_again": both_up,
        "router_lost_bfd_for": lost_at_router,
    }


def host_samples(rounds: Sequence[Json], routes: Sequence[str]) -> list[float]:
    """Per round: seconds until the last of the host's routes left r1; a round with a route that
    never left, or that could not be started, is TIMED_OUT."""
    samples = []
    for result in rounds:
        times = [result["gone_s"].get(p) for p in routes]
        samples.append(TIMED_OUT if any(t is None for t in times) else max(t for t in times if t is not None))
    return samples


def kill_figures(kills: Sequence[Json]) -> Json:
    settled = [k for k in kills if k["settled"]]
    left = [k for k in settled if k["route_left_s"] is not None]
    return {
        "rounds": len(kills),
        "rounds_not_settled": len(kills) - len(settled),
        "route_left_r1": len(left),
        "route_away_s": best_median_worst(
            [TIMED_OUT if k["route_away_s"] is None else k["route_away_s"] for k in left]
        ),
        "bfd_up_again_within_s": BFD_BACK_S,
        "bfd_up_again": sum(1 for k in settled if k["bfd_up_again"]),
        "router_lost_bfd": sum(1 for k in settled if k["router_lost_bfd_for"]),
    }


def report(
    args: argparse.Namespace, rounds: list[Json], kills: list[Json], started: str, began: float, lab: Lab
) -> Json:
    bfd = best_median_worst(host_samples(rounds, list(H1_ROUTES)))
    hold = best_median_worst(host_samples(rounds, list(H2_ROUTES)))
    ratio = (
        round(hold["median"] / bfd["median"], 2)
        if bfd["median"] is not None and hold["median"] is not None and bfd["median"] > 0
        else None
    )
    goals = {
        "bfd_host.worst": {"value_s": bfd["worst"], "goal_max_s": BFD_GOAL_S},
        "hold_time_host.worst": {"value_s": hold["worst"], "goal_max_s": HOLD_TIME_S + BFD_GOAL_S},
    }
    for goal in goals.values():
        goal["meets_goal"] = check(goal["value_s"], goal["goal_max_s"])
    return {
        **report_head("fabricd BFD: link cut -> routes gone at the router", started, began),
        "method": {
            "lab": f"labs/bfd.clab.yml renamed {LAB}",
            "what": (
                "r1's host-facing links cut with nftables in r1's namespace (every packet on eth1 and "
                "eth2 dropped, links up); r1's main table (routes of proto bgp) polled every 5 ms from "
                "the moment before the cut until both hosts' IPv4 and IPv6 routes are gone. h1: BFD "
                "100 ms x 3 (BIRD under fabricd; FRR bfdd, BGP sessions tied to BFD). h2: no BFD, hold "
                "time 3 s, keepalives every second. A host's figure is its last route to leave."
            ),
            "rounds": args.rounds,
            "limit_s": args.limit,
            "timeouts": "a route still at r1 after limit_s, or a round that could not settle, is an "
            "infinite sample: it stays in n and makes worst null",
        },
        "bfd_host": {"host": "h1", "bfd": "100 ms x 3", "routes_gone_s": bfd},
        "hold_time_host": {"host": "h2", "hold_time_s": HOLD_TIME_S, "routes_gone_s": hold},
        "hold_over_bfd_median": ratio,
        "rounds": rounds,
        "rounds_not_settled": sum(1 for r in rounds if not r["settled"]),
        "bird_sigkill": {
            "what": (
                "h1's BIRD SIGKILLed (fabricd restarts it after 0.5 s); r1's table polled every 5 ms for "
                f"{KILL_WATCHED}: how long it was away when it left (r1's BFD dropped h1's BGP session), "
                f"and whether BFD was Up again on h1 and r1 within {BFD_BACK_S:g} s (FRR 8.4 can lose its "
                "BFD session for a dynamic neighbor that returns within milliseconds; h1's fabricd is "
                "then restarted before the next round)"
            ),
            **kill_figures(kills),
            "per_round": kills,
        },
        "goals": goals,
        "all_goals_met": all(g["meets_goal"] for g in goals.values()),
        "namespaces_left_behind": leftover_namespaces(lab),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bfd",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"goals: worst <= {BFD_GOAL_S} s with BFD, <= {HOLD_TIME_S + BFD_GOAL_S} s on the hold time",
    )
    parser.add_argument("--rounds", type=int, default=10, help="link cuts (each measures both hosts)")
    parser.add_argument("--limit", type=float, default=10.0, help="seconds a cut waits for the routes to go")
    parser.add_argument("--bird-kill-rounds", type=int, default=10, help="SIGKILLs of h1's BIRD")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.limit <= 0 or args.bird_kill_rounds < 0:
        parser.error("--rounds and --limit must be positive, --bird-kill-rounds not negative")
    return run_lab_benchmark("bench.bfd", TOOLS, args.keep_logs, lambda root: collect(args, root))


if __name__ == "__main__":
    sys.exit(main())
