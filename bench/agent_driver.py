"""The real fabricd agent in a lab node, with a synthetic LXD view: what the scale figures measure.

    python -m bench.agent_driver --config labs/basic/h1/fabricd.yaml --state DIR --case best|worst
        [--instances 10000] [--routes-per-instance 5] [--no-loop-watch]

This is `fabricd.agent.daemon.Agent` with the features `fabricd run` composes
(`fabricd.agent.compose.build_features`: the route feature with its IncrementalPlanner and
ExaBGPSpeaker, ExaBGP as a supervised child, the reconcile loop, the status snapshot, the control
socket under STATE), the overlay left off. One thing differs: the LXD view is `SyntheticLXD`, whose
observer returns the synthetic snapshot of bench/synthetic.py, built in this process, instead of
reading LXD. So the process's memory and CPU are fabricd's own with the snapshot fabricd would
hold, plus the snapshot builders' modules (bench.synthetic, fabric_lab.lxd_builders). Decisions
go to the route feature's own log (`fabricctl events` of this agent stays empty).

The benchmark talks to it over stdin/stdout with JSON lines (a task of the synthetic view reads
stdin on the agent's own event loop); logs go to stderr. Times are time.monotonic(), which the
benchmark outside the node shares. Every answer carries this process's VmHWM and VmRSS.

Commands ("op"):
  start        wait until every BGP peer is established (the agent starts empty: LXD shows nothing)
  build        build the case's snapshot, held by the view and not shown yet
  load         show it, as a first read of LXD would: a reconcile pass plans and announces it;
               answers when that pass is done (its wall and CPU seconds); an "acked" line follows
               when ExaBGP has acked every route to its peers
  move {k}     replace one instance record (its IPv4 routes moved to fresh /32s); answers when the
               pass is done, with the new prefixes and their next hop
  pass         a pass with nothing changed, as the periodic one; answers when done
  status       ExaBGP's pid and starts, the event loop's worst stall since the last status
  quit         stop the agent as SIGTERM would (ExaBGP goes, sessions close)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.speaker_driver import LoopWatch, answer_established, command_lines, emit, speaker_status
from bench.synthetic import SYNTHETIC_RANGE, SYNTHETIC_RANGE6, bench_config, case_snapshot, movable, moved
from fabricd.agent.feature import Feature
from fabricd.log import configure_logging
from fabricd.lxd.observer import LXD, LXDObservation
from fabricd.lxd.records import LXDSnapshot

if TYPE_CHECKING:
    from fabricd.agent.daemon import Agent
    from fabricd.bgp.speaker import ExaBGPSpeaker
    from fabricd.routes.feature import RouteFeature

EMPTY = LXDSnapshot("m1", True, ("default",), (), ())


class SyntheticObserver:
    """Observer under LXD's key: the snapshot the benchmark last showed, LXD always reachable."""

    key = LXD

    def __init__(self) -> None:
        self.snapshot = EMPTY
        self.version = 0  # bumped with every snapshot shown
        self.seen: tuple[int, int] = (0, 0)  # (version, passes done before) at the last observe
        self.passes: Callable[[], int] = lambda: 0
        self.synced_at = time.time()

    async def observe(self) -> LXDObservation:
        self.seen = (self.version, self.passes())
        return LXDObservation(self.snapshot, True, self.synced_at, None, None)

    def show(self, snapshot: LXDSnapshot) -> int:
        self.snapshot, self.synced_at = snapshot, time.time()
        self.version += 1
        return self.version


class SyntheticLXD(Feature):
    """The LXD view, fed by the benchmark; its background task serves the benchmark's commands."""

    name = "lxd"

    def __init__(self, serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.observer = SyntheticObserver()
        self.observers = (self.observer,)
        self._serve = serve

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        return (self._serve(stop),)


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        # Imported after configure_logging: fabricd's module loggers bind the config current at import.
        from fabricd.agent.compose import build_features
        from fabricd.agent.daemon import Agent
        from fabricd.agent.decisions import DecisionLog
        from fabricd.routes.feature import RouteFeature

        self.case, self.instances, self.routes_each = args.case, args.instances, args.routes_per_instance
        allowed = (SYNTHETIC_RANGE, SYNTHETIC_RANGE6)
        config = bench_config(args.config, allowed, agent_state=args.state)
        self.view = SyntheticLXD(self.serve)
        decisions = DecisionLog()
        features = build_features(config, decisions, self._trigger, lxd=self.view)
        self.agent: Agent = Agent(config, features=features, decisions=decisions)
        self.view.observer.passes = lambda: self.agent.loop.stats.passes
        self.routes: RouteFeature = next(f for f in features if isinstance(f, RouteFeature))
        self.built: LXDSnapshot | None = None
        self.watch = LoopWatch()
        self.loop_watch = not args.no_loop_watch
        self.tasks: list[asyncio.Task[None]] = []

    def _trigger(self) -> None:
        self.agent.trigger()

    @property
    def speaker(self) -> ExaBGPSpeaker:
        if self.routes.speaker is None:
            raise RuntimeError("the config builds no BGP speaker")
        return self.routes.speaker

    # --- commands ---------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """The benchmark's commands, until it says quit or stdin ends; then the agent stops."""
        if self.loop_watch:
            self.tasks.append(asyncio.create_task(self.watch.run()))
        try:
            await command_lines(self.handle)
        finally:
            for task in self.tasks:
                task.cancel()
            self.agent.stopping.set()

    async def handle(self, op: str, command: dict[str, Any]) -> bool:
        if op == "start":
            await answer_established(self.speaker, time.monotonic())
        elif op == "build":
            began = time.perf_counter()
            self.built = case_snapshot(self.case, self.instances, self.routes_each)
            emit(op=op, instances=len(self.built.instances), seconds=time.perf_counter() - began)
        elif op == "load":
            if self.built is None:
                raise RuntimeError("build first")
            await self.do_pass(op, self.built)
            plan = self.routes.announcing.plan
            self.tasks.append(asyncio.create_task(self.watch_acks(plan.routes)))
        elif op == "move":
            await self.do_move(int(command["k"]))
        elif op == "pass":
            await self.do_pass(op, None)
        elif op == "status":
            emit(op=op, passes=self.agent.loop.stats.passes, **speaker_status(self.speaker, self.watch))
        elif op == "quit":
            return False
        else:
            emit(op=op, error="unknown command")
        return True

    async def do_pass(self, op: str, snapshot: LXDSnapshot | None, **extra: Any) -> None:
        """Show a snapshot (None: the same one again), ask for a pass, answer when it is done.

        CPU is this process's (every thread: the planner runs in a worker) from the call to the
        end of the pass that observed the snapshot."""
        observer = self.view.observer
        cpu, t_call = time.process_time(), time.monotonic()
        version = observer.show(snapshot if snapshot is not None else observer.snapshot)
        self.agent.trigger()
        while observer.seen[0] < version or self.agent.loop.stats.passes <= observer.seen[1]:
            await asyncio.sleep(0.002)
        done = time.monotonic()
        plan = self.routes.announcing.plan
        emit(
            op=op,
            t_call=t_call,
            t_done=done,
            cpu_s=time.process_time() - cpu,
            pass_s=self.agent.loop.stats.last_pass_seconds,
            routes=len(plan.routes),
            refused=len(plan.refused),
            withheld=len(plan.withheld),
            next_hops=len({r.next_hop for r in plan.routes}),
            attribute_sets=len({r.attributes for r in plan.routes}),
            families={str(v): sum(1 for r in plan.routes if r.version == v) for v in (4, 6)},
            **extra,
        )

    async def do_move(self, k: int) -> None:
        """One instance event at scale: an IPv4 instance's routes move to fresh /32s."""
        snapshot = self.view.observer.snapshot
        records = list(snapshot.instances)
        candidates = movable(snapshot)
        i = candidates[k * 137 % len(candidates)]
        name = records[i].name
        records[i] = moved(records[i], k, self.routes_each)
        prefixes = records[i].nics[0].config["ipv4.routes.external"].split(",")
        hops = {str(r.next_hop) for r in self.routes.announcing.plan.routes if r.origin.instance == name}
        await self.do_pass(
            "move",
            dataclasses.replace(snapshot, instances=tuple(records)),
            instance=name,
            prefixes=prefixes,
            next_hop=min(hops) if hops else None,
        )

    async def watch_acks(self, routes: Sequence[Any]) -> None:
        """When ExaBGP has acked every route to the peer of its family (the count fabricctl shows)."""
        want = {v: sum(1 for r in routes if r.version == v) for v in (4, 6)}
        while True:
            peers = self.speaker.peers()
            if all(p.prefixes_sent >= want[p.address.version] for p in peers):
                emit(op="acked", t=time.monotonic(), acked={str(p.address): p.prefixes_sent for p in peers})
                return
            await asyncio.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the node's fabricd.yaml")
    parser.add_argument("--state", type=Path, required=True, help="the agent's state directory")
    parser.add_argument("--case", choices=("best", "worst"), required=True)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--routes-per-instance", type=int, default=5)
    # The watch wakes the loop every 50 ms: the idle benchmark measures the agent without it.
    parser.add_argument("--no-loop-watch", action="store_true", help="no event-loop stall figures")
    args = parser.parse_args(argv)
    configure_logging("info", "json")
    driver = Driver(args)
    code = asyncio.run(driver.agent.run())
    emit(op="bye", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
