"""Event latencies on labs/basic.clab.yml: real LXD, fabricd, ExaBGP and FRR; r1's FIB is the judge.

Per round: `lxc start` of one instance with ipv4.routes.external → its route in r1's kernel table;
a speaker-alone announce and withdraw from h2 (the same-run floor); `lxc stop --force` → the route
gone. Then, with 20 routes from five instances: fabricd SIGKILL, ExaBGP SIGKILL and fabricd hung
(SIGSTOP) rounds.

Each instance round's clock starts at one point: the timestamp LXD wrote into its lifecycle event
(`instance-started`, `instance-stopped`/`instance-shutdown`), which is earlier than any listener,
fabricd's or ours, can have received it. A round that times out is an infinite sample: it counts
against its figure's goal, never dropped.

Clocks: FIB reads and event arrivals are time.monotonic() in this process; LXD's event timestamps,
fabricd's log and the packet capture are wall clock (LXD runs in a lab namespace on the same
kernel clock). Monotonic times are put on the wall clock with one offset measured at the start
(the two clocks do not drift apart measurably within a run).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.driver_link import DriverLink
from bench.fib import FibWatcher, ProcFib
from bench.labs import BASIC, REPO, named_lab, reap, restart_agent, stop_agent, wait_sessions
from bench.lxd_events import LifecycleEvents
from bench.pcap import BgpCapture, Segment, first_update
from bench.stats import TIMED_OUT, Json, check, distribution
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

H1_V4, H2_V4 = "10.99.1.11", "10.99.2.12"
INSTANCE, PREFIX = "brt1", "10.201.9.0/24"
FLOOR_PREFIX = "10.201.250.0/24"  # announced by the speaker-alone driver on h2
KILL_INSTANCES = 5
KILL_ROUTES_EACH = 4
KILL_PREFIXES = tuple(
    f"10.201.{20 + i * KILL_ROUTES_EACH + j}.0/24"
    for i in range(KILL_INSTANCES)
    for j in range(KILL_ROUTES_EACH)
)
STARTED = ("instance-started",)
STOPPED = ("instance-stopped", "instance-shutdown")
ADDRESS_REREADS_DONE = 3.5  # fabricd re-reads a started instance 1 s and 3 s later: let that pass
ROUND_TIMEOUT_S = 30.0  # an event or a FIB change not seen by then: the round timed out
KILL_TIMEOUT_S = 15.0
# Not measured here: lxd-bgp sleeps 1 s after every lifecycle event before it reads LXD, so none of
# its event latencies can be below 1.0 s. Source: stgraber/lxd-bgp, cmd/lxd-bgp/main.go,
# updatePrefixes(): `time.Sleep(time.Second)` ("Wait 1s for the database to be updated").
LXD_BGP_PUBLISHED_FLOOR_S = 1.0
LXD_BGP_SOURCE = (
    "published, not measured in this run: stgraber/lxd-bgp cmd/lxd-bgp/main.go, updatePrefixes() "
    "sleeps 1 s ('Wait 1s for the database to be updated') after every lifecycle event before it "
    "reads LXD, so none of its event latencies is below 1.0 s"
)

START_GOAL = {"p50_max_s": 0.3, "p99_max_s": 1.0}
STOP_GOAL = {"p50_max_s": 0.3}
KILL_GOAL = {"max_s": 0.5}

Progress = Callable[[str], None]


def clock_offset() -> float:
    """time.time() - time.monotonic(), the median of a few back-to-back readings."""
    return statistics.median(time.time() - time.monotonic() for _ in range(9))


@dataclass
class Change:
    """One measured route change, every moment on the wall clock (None where it was not seen)."""

    t0: float  # LXD's event timestamp (instance rounds) or the set_routes call (floor rounds)
    fib: float  # the first FIB read that showed the change, never before t0
    sent: float | None = None  # fabricd's "bgp commands sent" log line (floor: the set_routes call)
    cli_issued: float | None = None  # the lxc command was started
    cli_seconds: float | None = None
    arrival: float | None = None  # the event reached the benchmark's own listener


Round = Change | None  # None: the round timed out (an infinite sample)


@dataclass
class Samples:
    start: list[Round] = field(default_factory=list)
    stop: list[Round] = field(default_factory=list)
    floor_announce: list[Round] = field(default_factory=list)
    floor_withdraw: list[Round] = field(default_factory=list)
    kill: list[float] = field(default_factory=list)  # TIMED_OUT for a round that timed out
    restart: list[float] = field(default_factory=list)
    exabgp_gone: list[float] = field(default_factory=list)
    exabgp_back: list[float] = field(default_factory=list)
    hung: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    fib_before_t0: int = 0  # FIB changed before LXD stamped its event (counted as 0 s; 0 expected)


class FabricdLog:
    """fabricd's JSON log on h1: when it wrote the BGP commands for our prefix (wall clock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def commands_sent(self, since: int, verb: str, prefix: str) -> float | None:
        """time.time() of the first "bgp commands sent" batch after `since` that starts with our line."""
        with contextlib.suppress(OSError), open(self.path, "rb") as log:
            log.seek(since)
            for raw in log:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    line = json.loads(raw)
                    first = f"{line['first']} "
                    if line.get("event") == "bgp commands sent" and f" {verb} route {prefix} " in first:
                        return datetime.fromisoformat(line["timestamp"]).timestamp()
        return None


class LatencyRun:
    def __init__(self, lab: Lab, rounds: int, kill_rounds: int, progress: Progress) -> None:
        self.lab, self.rounds, self.kill_rounds, self.progress = lab, rounds, kill_rounds, progress
        self.h1, self.r1 = lab.node("h1"), lab.node("r1")
        holder = lab.state().nodes["r1"].holder_pid
        if holder is None:
            raise RuntimeError("r1 has no holder process")
        self.fib = ProcFib(holder)
        self.log = FabricdLog(self.h1.log_file("fabricd"))
        self.samples = Samples()
        self.watchdog_kills_before_faults = 0
        self.offset = clock_offset()

    def wall(self, mono: float) -> float:
        return mono + self.offset

    def mono(self, wall: float) -> float:
        return wall - self.offset

    # --- one measurement -------------------------------------------------------------------------

    def _lxc(self, *args: str) -> tuple[float, float]:
        """Run lxc on h1; (issued, returned) monotonic times.

        stdin is empty: `lxc init` reads instance YAML from any stdin that is not a terminal.
        """
        issued = time.monotonic()
        self.h1.run(["lxc", *args], timeout=60, input_text="")
        return issued, time.monotonic()

    def _create(self, name: str, routes: str) -> None:
        self._lxc("init", "busybox", name)
        self._lxc("config", "device", "override", name, "eth0", f"ipv4.routes.external={routes}")

    def _instance_round(
        self, watcher: FibWatcher, events: LifecycleEvents, start: bool, record: bool
    ) -> float | None:
        """lxc start (or stop --force) of the instance → the route's arrival (or removal) at r1.

        t0 is LXD's own timestamp in the lifecycle event. The FIB is watched from the moment the
        lxc command was issued (the change cannot come earlier); a change seen before t0 would mean
        fabricd acted on something else: it is counted in fib_before_t0 and taken as 0 s. An event
        or a FIB change not seen within ROUND_TIMEOUT_S makes the round a timed-out (infinite)
        sample. Returns the event's arrival (monotonic), None when it was not seen.
        """
        mark, offset = events.mark(), self.log.offset()
        verb = "start" if start else "stop"
        issued, returned = self._lxc("start", INSTANCE) if start else self._lxc("stop", "--force", INSTANCE)
        event = events.wait(STARTED if start else STOPPED, INSTANCE, mark, timeout=ROUND_TIMEOUT_S)
        seen = watcher.when([PREFIX], present=start, after=issued, timeout=ROUND_TIMEOUT_S)
        samples = self.samples.start if start else self.samples.stop
        if event is None or event.lxd_wall is None or seen is None:
            stamp = None if event is None else event.lxd_timestamp
            what = f"{verb}{'' if record else ' (warm-up)'}"
            self.samples.missed.append(f"{what}: timed out; event {stamp!r}, FIB seen {seen is not None}")
            if record:
                samples.append(None)
            return None if event is None else event.mono
        fib = self.wall(seen)
        if fib < event.lxd_wall:
            self.samples.fib_before_t0 += record
            fib = event.lxd_wall
        if record:
            samples.append(
                Change(
                    t0=event.lxd_wall,
                    fib=fib,
                    sent=self.log.commands_sent(offset, "announce" if start else "withdraw", PREFIX),
                    cli_issued=self.wall(issued),
                    cli_seconds=returned - issued,
                    arrival=event.wall,
                )
            )
        return event.mono

    def _floor_round(self, watcher: FibWatcher, driver: DriverLink, record: bool) -> None:
        """The speaker alone: set_routes in the driver on h2 → r1's FIB, announce then withdraw."""
        for present, routes, samples in (
            (True, [[FLOOR_PREFIX, H2_V4]], self.samples.floor_announce),
            (False, [], self.samples.floor_withdraw),
        ):
            reply = driver.call("set", routes=routes, timeout=ROUND_TIMEOUT_S)
            called = float(reply["t_call"])  # the t0 of this round, before anything was sent
            seen = watcher.when([FLOOR_PREFIX], present=present, after=called, timeout=ROUND_TIMEOUT_S)
            if seen is None:
                self.samples.missed.append(f"floor {'announce' if present else 'withdraw'}: timed out")
            if record:
                t0 = self.wall(called)
                samples.append(None if seen is None else Change(t0=t0, fib=self.wall(seen), sent=t0))
            time.sleep(0.3)

    # --- phases -----------------------------------------------------------------------------------

    def event_rounds(self, watcher: FibWatcher, events: LifecycleEvents, driver: DriverLink) -> None:
        for n in range(-1, self.rounds):  # round -1 warms every path up and is not counted
            record = n >= 0
            started = self._instance_round(watcher, events, start=True, record=record)
            if started is not None:
                time.sleep(max(0.0, started + ADDRESS_REREADS_DONE - time.monotonic()))
            self._floor_round(watcher, driver, record)
            self._instance_round(watcher, events, start=False, record=record)
            time.sleep(0.5)
            if record:
                s = self.samples
                self.progress(
                    f"latency round {n + 1}/{self.rounds}: start {_last(s.start)} stop {_last(s.stop)} "
                    f"floor {_last(s.floor_announce)}/{_last(s.floor_withdraw)}"
                )

    def fault_rounds(self, watcher: FibWatcher) -> Json:
        """With 20 routes from five instances at r1, kill_rounds of: ExaBGP SIGKILL then fabricd SIGKILL
        (and a restart); then as many of fabricd hung (SIGSTOP, then SIGKILL and a restart). Returns the
        FIB reader's cross-check, made while all routes are in."""
        for i in range(KILL_INSTANCES):
            self._create(f"bk{i}", ",".join(KILL_PREFIXES[i * KILL_ROUTES_EACH : (i + 1) * KILL_ROUTES_EACH]))
            self._lxc("start", f"bk{i}")
        if watcher.when(KILL_PREFIXES, present=True, after=time.monotonic(), timeout=60) is None:
            raise RuntimeError(f"the {len(KILL_PREFIXES)} routes of the kill rounds never all reached r1")
        cross_check = _cross_check(self.r1, self.fib)
        s = self.samples
        for n in range(self.kill_rounds):
            # ExaBGP first, while this fabricd has seen no ExaBGP crash: its supervisor restarts a child
            # after 0.5 s, doubling up to 10 s for repeated crashes (reset by a 30 s run), so each
            # round measures one isolated crash. The fabricd SIGKILL after it brings a fresh fabricd.
            exabgp = _exabgp_of(self._settled_agent())
            killed = time.monotonic()
            os.kill(exabgp, signal.SIGKILL)
            gone = self._withdrawn(watcher, killed, "exabgp sigkill")
            back = None
            if not math.isinf(gone):
                back = watcher.when(KILL_PREFIXES, present=True, after=killed + gone, timeout=ROUND_TIMEOUT_S)
            s.exabgp_gone.append(gone)
            s.exabgp_back.append(TIMED_OUT if back is None else back - killed)
            pid = self._settled_agent()
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            s.kill.append(self._withdrawn(watcher, killed, "fabricd sigkill"))
            reap(pid)
            s.restart.append(self._restart(watcher))
            self.progress(
                f"fault round {n + 1}/{self.kill_rounds}: exabgp sigkill → back in "
                f"{_secs(s.exabgp_back[-1])}, fabricd sigkill → withdrawn in {_secs(s.kill[-1])}"
            )
        for n in range(self.kill_rounds):
            pid = self._settled_agent()
            stopped = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            s.hung.append(self._withdrawn(watcher, stopped, "fabricd hung"))
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
            reap(pid)
            self._restart(watcher)
            self.progress(f"fabricd hung {n + 1}/{self.kill_rounds}: withdrawn in {_secs(s.hung[-1])}")
        return cross_check

    def _settled_agent(self) -> int:
        """h1's fabricd pid, a second after the last change settled."""
        time.sleep(1.0)
        pid = self.lab.state().nodes["h1"].agent_pid
        if pid is None:
            raise RuntimeError("h1 has no fabricd")
        return pid

    def _withdrawn(self, watcher: FibWatcher, t0: float, what: str) -> float:
        """Seconds from t0 until none of the 20 routes is at r1; a timed-out round is infinite."""
        gone = watcher.when(KILL_PREFIXES, present=False, after=t0, timeout=KILL_TIMEOUT_S)
        if gone is None:
            self.samples.missed.append(f"{what}: routes not withdrawn within {KILL_TIMEOUT_S:g} s")
        return TIMED_OUT if gone is None else gone - t0

    def _restart(self, watcher: FibWatcher) -> float:
        """Start h1's fabricd again; seconds until all 20 routes are back (they must come back)."""
        restarted = time.monotonic()
        restart_agent(self.lab, "h1")
        back = watcher.when(KILL_PREFIXES, present=True, after=restarted, timeout=60)
        if back is None:
            raise RuntimeError("routes did not come back after restarting fabricd")
        return back - restarted

    def run(self) -> Json:
        wait_sessions(self.h1)
        stop_agent(self.lab, "h2")  # h2's own speaker would hold the session the floor driver needs
        h2 = self.lab.node("h2")
        floor_config = REPO / "labs" / "basic" / "h2" / "fabricd.yaml"
        args = ["--config", str(floor_config), "--state", str(h2.directory / "bench-floor")]
        driver = DriverLink(self.lab, "h2", args, "bench-floor-driver")
        try:
            driver.call("start", timeout=90)
            self._create(INSTANCE, PREFIX)
            socket = self.lab.state().nodes["h1"].lxd_socket
            if socket is None:
                raise RuntimeError("h1 runs no LXD")
            prefixes = (PREFIX, FLOOR_PREFIX, *KILL_PREFIXES)
            with LifecycleEvents(Path(socket)) as events, FibWatcher(self.fib, prefixes) as watcher:
                from_h1, from_h2 = BgpCapture(self.lab, "r1", "eth1"), BgpCapture(self.lab, "r1", "eth2")
                with from_h1, from_h2:
                    self.event_rounds(watcher, events, driver)
                self.watchdog_kills_before_faults = _watchdog_kills(self.h1)
                wire = from_h1.segments() + from_h2.segments()
                cross_check = self.fault_rounds(watcher)
                reads = watcher.reads
                actions = events.actions(INSTANCE)
        finally:
            driver.close()
        return self.report(cross_check, reads, wire, actions)

    # --- report ----------------------------------------------------------------------------------

    def report(self, cross_check: Json, reads: int, wire: list[Segment], actions: dict[str, int]) -> Json:
        s = self.samples
        floor = _breakdown(s.floor_announce, wire, H2_V4, speaker_only=True)
        floor_withdraw = _breakdown(s.floor_withdraw, wire, H2_V4, speaker_only=True)
        start = distribution(_since(s.start, lambda c: c.t0))
        stop = distribution(_since(s.stop, lambda c: c.t0))
        kill = distribution(s.kill)
        floor_p50 = floor["total"].get("p50")
        floor_withdraw_p50 = floor_withdraw["total"].get("p50")
        return {
            "lab": "labs/basic.clab.yml",
            "lab_name": self.lab.topology.name,
            "rounds": self.rounds,
            "kill_rounds": self.kill_rounds,
            "fib": {
                "how": "r1's main IPv4 table read from /proc/<r1 holder pid>/net/route in a thread",
                "poll_interval_s": 0.002,
                "reads": reads,
                "cross_check_with_pyroute2": cross_check,
            },
            "t0": (
                "instance rounds: the timestamp LXD wrote into its lifecycle event (instance-started, "
                "instance-stopped/-shutdown), before any listener (fabricd's or the benchmark's) can have "
                "received it; the end is the first FIB read showing the change. The FIB is watched from "
                "the moment the lxc command was issued; a change seen before t0 is counted in "
                "fib_changed_before_t0 and taken as 0 s, so no sample is negative"
            ),
            "timeouts": {
                "what": (
                    f"rounds whose event or FIB change was not seen within {ROUND_TIMEOUT_S:g} s "
                    f"({KILL_TIMEOUT_S:g} s for SIGKILL): each stays in its figure as an infinite sample "
                    "(null in samples), so a percentile or max that reaches one is null and fails its goal"
                ),
                "instance_start": start["timed_out"],
                "instance_stop": stop["timed_out"],
                "fabricd_sigkill": kill["timed_out"],
                "exabgp_sigkill": sum(1 for x in s.exabgp_back if math.isinf(x)),
                "fabricd_hung": sum(1 for x in s.hung if math.isinf(x)),
                "speaker_floor_announce": floor["total"]["timed_out"],
                "speaker_floor_withdraw": floor_withdraw["total"]["timed_out"],
            },
            "fib_changed_before_t0": s.fib_before_t0,
            "lxd_events_for_instance": actions,
            "instance_start_to_fib": {
                "what": "LXD's instance-started timestamp → 10.201.9.0/24 in r1's FIB",
                "from_event": start,
                "from_lxc_start_issued": distribution(_since(s.start, lambda c: c.cli_issued)),
                "lxc_start_command_s": distribution(
                    [TIMED_OUT if c is None or c.cli_seconds is None else c.cli_seconds for c in s.start]
                ),
                "event_delivery_to_benchmark_s": _brief(distribution(_delivery(s.start))),
                "goal": START_GOAL,
                "meets_goal": check(start.get("p50"), START_GOAL["p50_max_s"])
                and check(start.get("p99"), START_GOAL["p99_max_s"]),
                "ratio_vs_lxd_bgp_published_floor": _ratio(start.get("p50"), LXD_BGP_PUBLISHED_FLOOR_S),
                "minus_speaker_floor_s": _minus(start.get("p50"), floor_p50),
                "breakdown": _breakdown(s.start, wire, H1_V4),
            },
            "instance_stop_to_withdrawn": {
                "what": "LXD's instance-stopped (or -shutdown) timestamp → the route gone from r1's FIB",
                "from_event": stop,
                "from_lxc_stop_issued": distribution(_since(s.stop, lambda c: c.cli_issued)),
                "event_delivery_to_benchmark_s": _brief(distribution(_delivery(s.stop))),
                "goal": STOP_GOAL,
                "meets_goal": check(stop.get("p50"), STOP_GOAL["p50_max_s"]),
                "ratio_vs_lxd_bgp_published_floor": _ratio(stop.get("p50"), LXD_BGP_PUBLISHED_FLOOR_S),
                "minus_speaker_floor_s": _minus(stop.get("p50"), floor_withdraw_p50),
                "breakdown": _breakdown(s.stop, wire, H1_V4),
            },
            "fabricd_sigkill_to_all_withdrawn": {
                "routes": len(KILL_PREFIXES),
                "instances": KILL_INSTANCES,
                "what": "t0 just before os.kill(fabricd, SIGKILL); end: none of the routes in r1's FIB",
                "seconds": kill,
                "goal": KILL_GOAL,
                "goal_covers": "every round: meets_goal is on the max of all kill rounds, timed out included",
                "meets_goal": len(s.kill) == self.kill_rounds and check(kill.get("max"), KILL_GOAL["max_s"]),
                "p50_within_goal": check(kill.get("p50"), KILL_GOAL["max_s"]),
                "restart_to_all_reannounced_s": distribution(s.restart),
            },
            "exabgp_sigkill_to_all_back": {
                "what": (
                    "t0 just before os.kill(ExaBGP, SIGKILL) (fabricd's child on h1, 20 routes at r1), "
                    "the first ExaBGP crash of that fabricd (its supervisor restarts after 0.5 s, doubling "
                    "for repeated crashes); withdrawn_s: until none is at r1 (the session closed); "
                    "seconds: until all are back (fabricd restarted ExaBGP and announced them again)"
                ),
                "withdrawn_s": distribution(s.exabgp_gone),
                "seconds": distribution(s.exabgp_back),
            },
            "fabricd_hung_to_all_withdrawn": {
                "what": (
                    "t0 just before os.kill(fabricd, SIGSTOP) on h1 (20 routes at r1); end: none of them at "
                    "r1 (fabricd's relay stops ExaBGP after 3 s without heartbeats); fabricd is then killed "
                    "and restarted"
                ),
                "seconds": distribution(s.hung),
            },
            "baselines": {
                "lxd_bgp_published_floor_s": LXD_BGP_PUBLISHED_FLOOR_S,
                "lxd_bgp_published_floor_source": LXD_BGP_SOURCE,
                "speaker_floor": {
                    "what": (
                        "measured in this run: ExaBGPSpeaker alone (bench/speaker_driver.py on h2, h2's "
                        "fabricd stopped): set_routes call → r1's FIB; fabricd p50 minus this p50 = LXD "
                        "event + re-read + plan"
                    ),
                    "announce_to_fib": floor,
                    "withdraw_to_fib": floor_withdraw,
                },
            },
            "relay_watchdog_kills_h1": self.watchdog_kills_before_faults,
            "relay_watchdog_kills_h1_with_faults": _watchdog_kills(self.h1),
            "relay_watchdog_kills_note": (
                "relay_watchdog_kills_h1 is counted over the start/stop rounds (0 expected); with the "
                "fault rounds each hung round adds one (the relay's watchdog is what withdraws the routes)"
            ),
            "missed": s.missed,
        }


def _since(rounds: list[Round], start: Callable[[Change], float | None],
           end: Callable[[Change], float] = lambda c: c.fib) -> list[float]:  # fmt: skip
    """Seconds from `start` to `end` of each round; a timed-out round is an infinite sample."""
    out = []
    for change in rounds:
        began = None if change is None else start(change)
        out.append(TIMED_OUT if change is None or began is None else end(change) - began)
    return out


def _delivery(rounds: list[Round]) -> list[float]:
    """LXD's event timestamp → the event reached the benchmark's listener (rounds that were seen)."""
    return [c.arrival - c.t0 for c in rounds if c is not None and c.arrival is not None]


def _breakdown(rounds: list[Round], wire: list[Segment], src: str, speaker_only: bool = False) -> Json:
    """Where the time went: t0 → BGP commands written → UPDATE on r1's link → r1's FIB.

    `total` holds every round (a timed-out one as an infinite sample); the split only the rounds
    that were seen."""
    to_sent, to_wire, wire_to_fib = [], [], []
    total = _since(rounds, lambda c: c.t0)
    for change in rounds:
        if change is None or change.sent is None:
            continue
        to_sent.append(change.sent - change.t0)
        on_wire = first_update(wire, src, change.sent)
        if on_wire is not None and on_wire <= change.fib:
            to_wire.append(on_wire - change.sent)
            wire_to_fib.append(change.fib - on_wire)
    parts: Json = {"total": distribution(total)}
    if not speaker_only:
        parts["t0_to_bgp_commands_sent"] = _brief(distribution(to_sent))
    parts["bgp_commands_sent_to_update_on_wire"] = _brief(distribution(to_wire))
    parts["update_on_wire_to_fib"] = _brief(distribution(wire_to_fib))
    parts["how"] = (
        "the set_routes call → first BGP UPDATE from h2 captured by tcpdump on r1's link → FIB"
        if speaker_only
        else "fabricd's 'bgp commands sent' log line; first BGP UPDATE from h1 captured by tcpdump on "
        "r1's link (an UPDATE not matched to a round leaves that round out of the wire split)"
    )
    return parts


def _brief(figure: Json) -> Json:
    return {k: v for k, v in figure.items() if k not in ("samples", "unit", "mean")}


def _cross_check(r1: NodeRuntime, fib: ProcFib) -> Json:
    """The /proc reader agrees with pyroute2's view (fabric_lab/fib.py) on present and absent routes."""
    from fabric_lab.fib import routes_to

    checked = (*KILL_PREFIXES, PREFIX, FLOOR_PREFIX, "10.99.1.0/24")
    ours = {p: fib.gateways(p) for p in checked}
    theirs = {p: routes_to(r1.netns_name, p) for p in checked}
    return {"agree": ours == theirs, "prefixes": len(checked), "present": sum(1 for g in ours.values() if g)}


def _watchdog_kills(node: NodeRuntime) -> int:
    """Times fabricd's relay stopped ExaBGP for want of heartbeats (0 expected: the loop is never busy)."""
    with contextlib.suppress(OSError):
        text = (node.run_dir / "fabricd" / "bgp" / "exabgp.out").read_text(errors="replace")
        return text.count("no heartbeat from fabricd")
    return 0


def _exabgp_of(agent: int) -> int:
    """The ExaBGP child of this fabricd."""
    children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    found = [int(p) for p in children if b"exabgp" in Path(f"/proc/{p}/cmdline").read_bytes()]
    if len(found) != 1:
        raise RuntimeError(f"fabricd {agent} has {len(found)} ExaBGP children")
    return found[0]


def _secs(value: float) -> str:
    return "(timed out)" if math.isinf(value) else f"{value:.3f}s"


def _last(rounds: list[Round]) -> str:
    if not rounds:
        return "-"
    last = rounds[-1]
    return "timed out" if last is None else f"{(last.fib - last.t0) * 1000:.0f}ms"


def _ratio(value: float | None, base: float) -> float | None:
    return None if value is None else round(value / base, 3)


def _minus(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else round(value - base, 4)


def latency_phase(rounds: int, kill_rounds: int, state_root: Path, progress: Progress) -> Json:
    lab = named_lab(BASIC, "bench-rt", state_root)
    progress(f"latency: bringing up {lab.topology.name} (real LXD, fabricd, ExaBGP, FRR)")
    lab.up()
    try:
        return LatencyRun(lab, rounds, kill_rounds, progress).run()
    finally:
        progress(f"latency: taking {lab.topology.name} down")
        lab.down()
