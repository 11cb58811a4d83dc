"""fabricd anycast services benchmark: lost queries on drain, backend failure and agent kill; BFD.

    sudo .venv/bin/python -m bench.anycast [--rounds 5] [--keep-logs]

Prints one JSON document on stdout; progress goes to stderr. One lab: labs/anycast.clab.yml renamed
"bany" (namespaces fl-bany-*) under a fresh state directory in /tmp: r1 (FRR, ECMP, BFD 100 ms x 3),
three hosts with LXD, fabricd and one echo instance each (bany-echo-h1..h3) on 10.250.0.53 and
fd00:250::53, and the query client in `client` at --rate queries/s to 10.250.0.53 through the whole
run. Each round picks the next host and: drains it and undrains it; kills its echo responder (a
failed backend) and starts it again; SIGKILLs its fabricd and starts it again; cuts its link at r1
with BFD, and again with r1's BGP not following BFD (the hold-time baseline, same run). r1's kernel
table, polled every 5 ms, times the paths; the client's lines count the lost queries. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.labs import REPO, lab_bench_main, named_lab, progress, reap, restart_agent
from bench.stats import TIMED_OUT, Json, distribution
from fabric_lab import netns
from fabric_lab.anycast_lab import (
    ANYCAST_V4,
    ANYCAST_V6,
    HOSTS,
    SERVICE,
    EchoBackend,
    RouterFib,
    Traffic,
    all_hops,
    bfd_up_at_router,
    cut_link,
    heal_link,
    router_bfd,
    updates_received,
)
from fabric_lab.runner import Lab, namespace_prefix
from fabricd import __version__

ANYCAST_LAB = REPO / "labs" / "anycast.clab.yml"
LAB_NAME = "bany"  # the benchmark's own lab name: never "anycast" or the tests' "tany"
TOOLS = ("nsenter", "lxd", "lxc", "vtysh", "nft", "bird")
PREFIXES = {4: f"{ANYCAST_V4}/32", 6: f"{ANYCAST_V6}/128"}
# labs/anycast/h*/fabricd.yaml
INTERVAL, FALL, RISE, DRAIN_DELAY = 1.0, 2, 2, 3.0
BFD_GOAL_S = 0.4
KILL_GOAL_S = 0.2  # lost queries when fabricd is killed: at most this many seconds' worth
ROUND_TIMEOUT = 30.0

FIGURES = """\
figures (each over --rounds rounds, rotating the host; best and worst, samples in round order):
  drain.lost_queries            queries lost from `fabricctl drain` to undrain and the path back; goal 0
  drain.out_of_ecmp_s           drain -> the host's path out of r1's FIB (GRACEFUL_SHUTDOWN -> local-pref 0)
  backend_failure.lost_queries  echo responder SIGKILLed -> path withdrawn (and back after a restart);
                                goal <= interval x fall x rate (the check's own bound)
  backend_failure.path_gone_s   the kill -> the host's path gone from r1's FIB (v4 and v6, the later)
  backend_failure.path_back_s   responder started again -> path back (rise checks)
  fabricd_kill.lost_queries     SIGKILL of the host's fabricd; goal <= 0.2 s worth at the rate
  fabricd_kill.path_gone_s      the kill -> path gone at r1
  fabricd_stop.*                SIGTERM of the host's fabricd: lost queries, path gone at r1, host route
                                gone on the host, and by how much the host route went first
  link_cut.bfd_s                the host's link cut at r1 (nftables drop) -> path gone, BFD 100 ms x 3;
                                goal <= 0.4 s
  link_cut.hold_s               the same with r1's BGP not following BFD (hold 3 s), same run
  link_cut.*_lost_queries       queries lost from the cut until the path left r1 (the host's share)
  updates_per_health_change     BGP UPDATEs r1 received from the host per session for one fall and
                                one rise of a backend; goal 1
"""


@dataclass
class Rounds:
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)


def figure(samples: Sequence[float], unit: str, goal_max: float | None, digits: int = 4) -> Json:
    """Best and worst over the rounds (a timed-out round is infinite: worst null, goal missed)."""
    best = min(samples, default=math.inf)
    worst = max(samples, default=math.inf)
    result: Json = {
        "best": round(best, digits) if math.isfinite(best) else None,
        "worst": round(worst, digits) if math.isfinite(worst) else None,
        **{k: v for k, v in distribution(samples, unit, digits).items() if k not in ("min", "max")},
    }
    if goal_max is not None:
        result["goal"] = {"worst_max": goal_max}
        result["meets_goal"] = result["worst"] is not None and result["worst"] <= goal_max
    return result


class AnycastBench:
    def __init__(self, lab: Lab, rate: float) -> None:
        self.lab = lab
        self.r1 = lab.node("r1")
        self.backends = {h: EchoBackend(lab.node(h), f"{LAB_NAME}-echo-{h}") for h in HOSTS}
        self.traffic = Traffic(lab.node("client"), ANYCAST_V4, lab.state_dir / "client4.jsonl", rate)
        self.fib = RouterFib(self.r1.netns_name)
        self.rounds = Rounds()
        self.rate = rate

    def set_up(self) -> None:
        for backend in self.backends.values():
            backend.launch()
        self.wait_hops(all_hops(4), all_hops(6), 90)
        self.traffic.start()
        self.traffic.wait_settled(time.monotonic() + 1)

    def teardown(self) -> Json:
        self.traffic.stop()
        heal_link(self.r1, LAB_NAME)
        for backend in self.backends.values():
            backend.stop()
        self.fib.close()
        return {"responders": [p for b in self.backends.values() for p in b.pids if netns.alive(p)]}

    def wait_hops(self, v4: set[str], v6: set[str], timeout: float, since: float | None = None) -> float:
        """Seconds (from `since`) until both families have exactly these next hops at r1."""
        started = time.monotonic() if since is None else since
        wanted = {4: v4, 6: v6}
        reached = 0.0
        for family, hops in wanted.items():
            remaining = max(0.1, timeout - (time.monotonic() - started))
            reached = max(reached, self.fib.wait(PREFIXES[family], hops, remaining, since=started))
        return reached

    def without(self, host: str, timeout: float, since: float) -> float:
        others = [h for h in HOSTS if h != host]
        try:
            return self.wait_hops(all_hops(4, others), all_hops(6, others), timeout, since)
        except AssertionError as exc:
            self.rounds.notes.append(f"{host}: path not gone: {exc}")
            return TIMED_OUT

    def back(self, timeout: float = ROUND_TIMEOUT) -> float:
        started = time.monotonic()
        return self.wait_hops(all_hops(4), all_hops(6), timeout, started)

    def lost(self, start: float, end: float) -> int:
        self.traffic.wait_settled(end)
        return self.traffic.window(start - 1, end).lost_between(start, end)

    def drain_round(self, host: str) -> None:
        node = self.lab.node(host)
        started = time.monotonic()
        node.fabricctl("drain", "--service", SERVICE)
        try:
            self.rounds.add("drain.out_of_ecmp_s", self.without(host, DRAIN_DELAY + 5, started))
            time.sleep(max(0.0, started + DRAIN_DELAY + 1.0 - time.monotonic()))
        finally:
            node.fabricctl("undrain", "--service", SERVICE)
        self.rounds.add("drain.path_back_s", self.back())
        self.rounds.add("drain.lost_queries", self.lost(started - 0.5, time.monotonic() + 1))

    def backend_failure_round(self, host: str) -> None:
        before = updates_received(self.r1, host)
        killed = time.monotonic()
        self.backends[host].kill_responder()
        gone = self.without(host, 15, killed)
        self.rounds.add("backend_failure.path_gone_s", gone)
        time.sleep(0.5)  # any UPDATE for the fall has reached r1
        fell = updates_received(self.r1, host)
        restarted = time.monotonic()
        self.backends[host].start_responder()
        self.rounds.add("backend_failure.path_back_s", self.back())
        time.sleep(0.5)
        rose = updates_received(self.r1, host)
        for address in before:
            self.rounds.add("updates.fall", fell[address] - before[address])
            self.rounds.add("updates.rise", rose[address] - fell[address])
        self.rounds.add("backend_failure.lost_queries", self.lost(killed - 0.5, time.monotonic() + 1))
        self.rounds.add("backend_failure.lost_after_restart", self.lost(restarted, time.monotonic()))

    def fabricd_kill_round(self, host: str) -> None:
        pid = self.lab.state().nodes[host].agent_pid
        if pid is None or not netns.alive(pid):
            self.rounds.notes.append(f"{host}: no fabricd to kill")
            return
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.rounds.add("fabricd_kill.path_gone_s", self.without(host, 10, killed))
        reap(pid)
        lost_at_kill = self.lost(killed - 0.5, killed + 2)
        with_restart = time.monotonic()
        restart_agent(self.lab, host)
        self.rounds.add("fabricd_kill.path_back_s", self.back(60))
        self.rounds.add("fabricd_kill.lost_queries", lost_at_kill)
        self.rounds.add("fabricd_kill.lost_on_restart", self.lost(with_restart, time.monotonic() + 1))

    def fabricd_stop_round(self, host: str) -> None:
        """SIGTERM: the withdraw must reach r1 before the host route goes (docs/services.md, Ordering);
        both are timed, and the queries lost in between counted."""
        pid = self.lab.state().nodes[host].agent_pid
        if pid is None or not netns.alive(pid):
            self.rounds.notes.append(f"{host}: no fabricd to stop")
            return
        others = [h for h in HOSTS if h != host]
        wanted = all_hops(4, others)
        at_router = at_host = TIMED_OUT
        with RouterFib(self.lab.node(host).netns_name) as host_table:
            stopped = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while time.monotonic() - stopped < 10 and not (
                math.isfinite(at_router) and math.isfinite(at_host)
            ):
                elapsed = time.monotonic() - stopped
                if not math.isfinite(at_router) and self.fib.hops(PREFIXES[4]) == wanted:
                    at_router = elapsed
                if not math.isfinite(at_host) and not host_table.hops(PREFIXES[4]):
                    at_host = elapsed
                time.sleep(0.002)
        self.rounds.add("fabricd_stop.path_gone_s", at_router)
        self.rounds.add("fabricd_stop.host_route_gone_s", at_host)
        self.rounds.add("fabricd_stop.host_route_gone_before_path_s", at_router - at_host)
        lost = self.lost(stopped - 0.5, stopped + 2)
        deadline = time.monotonic() + 20
        while netns.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        reap(pid)
        restart_agent(self.lab, host)
        self.rounds.add("fabricd_stop.path_back_s", self.back(60))
        self.rounds.add("fabricd_stop.lost_queries", lost)

    def link_cut_round(self, host: str, bfd: bool) -> None:
        name = "link_cut.bfd_s" if bfd else "link_cut.hold_s"
        if not bfd:
            router_bfd(self.r1, host, enabled=False)
        try:
            cut = time.monotonic()
            cut_link(self.r1, LAB_NAME, host)
            try:
                gone = self.without(host, 10, cut)
                self.rounds.add(name, gone)
            finally:
                heal_link(self.r1, LAB_NAME)
            lost_name = "link_cut.bfd_lost_queries" if bfd else "link_cut.hold_lost_queries"
            self.rounds.add(
                lost_name, self.lost(cut - 0.5, cut + (gone if math.isfinite(gone) else 10) + 1.5)
            )
        finally:
            if not bfd:
                router_bfd(self.r1, host, enabled=True)
        self.back(60)
        self.wait_router_bfd()

    def wait_router_bfd(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while set(bfd_up_at_router(self.r1).values()) != {"up"}:
            if time.monotonic() > deadline:
                self.rounds.notes.append(f"r1's BFD sessions not all up: {bfd_up_at_router(self.r1)}")
                return
            time.sleep(0.2)


def measure(bench: AnycastBench, rounds: int) -> None:
    steps: list[tuple[str, Callable[[str], None]]] = [
        ("drain", bench.drain_round),
        ("backend failure", bench.backend_failure_round),
        ("fabricd kill", bench.fabricd_kill_round),
        ("fabricd stop (SIGTERM)", bench.fabricd_stop_round),
        ("link cut with BFD", lambda h: bench.link_cut_round(h, bfd=True)),
        ("link cut, hold time only", lambda h: bench.link_cut_round(h, bfd=False)),
    ]
    for index in range(rounds):
        host = HOSTS[index % len(HOSTS)]
        for what, step in steps:
            progress(f"round {index + 1}/{rounds}: {what} on {host}")
            step(host)


def report(args: argparse.Namespace, bench: AnycastBench, total: Json) -> Json:
    s = bench.rounds.samples
    rate = args.rate
    fail_goal = INTERVAL * FALL * rate
    bfd = figure(s.get("link_cut.bfd_s", []), "s", BFD_GOAL_S)
    hold = figure(s.get("link_cut.hold_s", []), "s", None)
    updates = s.get("updates.fall", []) + s.get("updates.rise", [])
    goals = {
        "drain.lost_queries": figure(s.get("drain.lost_queries", []), "queries", 0),
        "backend_failure.lost_queries": figure(
            s.get("backend_failure.lost_queries", []), "queries", fail_goal
        ),
        "fabricd_kill.lost_queries": figure(
            s.get("fabricd_kill.lost_queries", []), "queries", KILL_GOAL_S * rate
        ),
        "link_cut.bfd_s": bfd,
        "updates_per_health_change": figure(updates, "updates", 1),
    }
    result: Json = {
        "benchmark": "anycast",
        "fabricd_version": __version__,
        "config": {
            "rate_qps": rate,
            "rounds": args.rounds,
            "check": {"type": "udp", "interval_s": INTERVAL, "fall": FALL, "rise": RISE, "timeout_s": 0.5},
            "drain_delay_s": DRAIN_DELAY,
            "bfd": "100 ms x 3 (r1 and every host)",
            "bgp_hold_s": 3,
        },
        "drain": {
            "lost_queries": goals["drain.lost_queries"],
            "out_of_ecmp_s": figure(s.get("drain.out_of_ecmp_s", []), "s", None),
            "path_back_s": figure(s.get("drain.path_back_s", []), "s", None),
        },
        "backend_failure": {
            "lost_queries": goals["backend_failure.lost_queries"],
            "lost_queries_vs_interval_x_fall_x_rate": fail_goal,
            "path_gone_s": figure(s.get("backend_failure.path_gone_s", []), "s", None),
            "path_back_s": figure(s.get("backend_failure.path_back_s", []), "s", None),
            "lost_after_restart": figure(s.get("backend_failure.lost_after_restart", []), "queries", None),
        },
        "fabricd_kill": {
            "lost_queries": goals["fabricd_kill.lost_queries"],
            "path_gone_s": figure(s.get("fabricd_kill.path_gone_s", []), "s", None),
            "path_back_s": figure(s.get("fabricd_kill.path_back_s", []), "s", None),
            "lost_on_restart": figure(s.get("fabricd_kill.lost_on_restart", []), "queries", None),
        },
        "fabricd_stop": {
            "lost_queries": figure(s.get("fabricd_stop.lost_queries", []), "queries", None),
            "path_gone_s": figure(s.get("fabricd_stop.path_gone_s", []), "s", None),
            "host_route_gone_s": figure(s.get("fabricd_stop.host_route_gone_s", []), "s", None),
            "host_route_gone_before_path_s": figure(
                s.get("fabricd_stop.host_route_gone_before_path_s", []), "s", None
            ),
            "path_back_s": figure(s.get("fabricd_stop.path_back_s", []), "s", None),
            "what": "SIGTERM of the host's fabricd (IPv4): when the path left r1 and when the host route "
            "left the host; positive host_route_gone_before_path_s means the host route went first "
            "(queries r1 still sends there are lost), against the ordering rule of docs/services.md",
        },
        "link_cut": {
            "bfd_s": bfd,
            "hold_s": hold,
            "bfd_lost_queries": figure(s.get("link_cut.bfd_lost_queries", []), "queries", None),
            "hold_lost_queries": figure(s.get("link_cut.hold_lost_queries", []), "queries", None),
            "bfd_worst_vs_hold_best": (
                round(bfd["worst"] / hold["best"], 3) if bfd["worst"] is not None and hold["best"] else None
            ),
        },
        "updates_per_health_change": {
            **goals["updates_per_health_change"],
            "fall": s.get("updates.fall", []),
            "rise": s.get("updates.rise", []),
            "what": "UPDATE messages r1 counted from the host (show bgp neighbors json, updatesRecv), per "
            "session (IPv4 and IPv6), for one backend fall and for its rise",
        },
        "client_totals": total,
        "notes": bench.rounds.notes,
    }
    result["goals"] = {name: bool(value.get("meets_goal")) for name, value in goals.items()}
    result["all_goals_met"] = all(result["goals"].values())
    return result


def run(args: argparse.Namespace, state_root: Path) -> Json:
    started = time.time()
    lab = named_lab(ANYCAST_LAB, LAB_NAME, state_root)
    progress(f"bringing up {lab.topology.name} from {ANYCAST_LAB.relative_to(REPO)}")
    lab.down()  # an aborted earlier run of this benchmark: namespaces fl-bany-* only
    left: Json = {}
    load_start = [round(x, 2) for x in os.getloadavg()]
    try:
        lab.up()
        bench = AnycastBench(lab, args.rate)
        total: Json = {}
        try:
            bench.set_up()
            measure(bench, args.rounds)
        finally:
            progress("stopping the client and the responders")
            total = bench.traffic.stop()
            left.update(bench.teardown())
    finally:
        progress(f"taking {lab.topology.name} down")
        lab.down()
    left["namespaces"] = netns.list_with_prefix(namespace_prefix(LAB_NAME))
    result = report(args, bench, total)
    result["started_at"] = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    result["machine"] = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_avg_start": load_start,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "other_lab_namespaces_at_end": sorted(
            {
                n.rsplit("-", 1)[0]
                for n in netns.list_with_prefix("fl-")
                if not n.startswith(f"fl-{LAB_NAME}-")
            }
        ),
    }
    result["left_behind"] = left
    result["duration_s"] = round(time.time() - started, 1)
    return result


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return (
            "bench.anycast needs root: it builds network namespaces and runs LXD, FRR and fabricd in them. "
            "Run it from the repository root, e.g. `sudo .venv/bin/python -m bench.anycast`."
        )
    path = os.environ.get("PATH", "") + ":/usr/sbin"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        return f"bench.anycast needs {', '.join(missing)} (scripts/setup.sh installs them)"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.anycast",
        description=(__doc__ or "").split("\n\n", 1)[0],
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each on the next host (default 5)")
    parser.add_argument("--rate", type=float, default=1000.0, help="client queries per second (default 1000)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's logs after a successful run")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.rate <= 0:
        parser.error("--rounds must be at least 1 and --rate positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return lab_bench_main("bench-anycast-", parse_args(argv), unavailable(), run)


if __name__ == "__main__":
    sys.exit(main())
