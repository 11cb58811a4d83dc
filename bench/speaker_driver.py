"""The speaker alone, in a lab node: the latency benchmark's same-run floor.

    python -m bench.speaker_driver --config labs/basic/h2/fabricd.yaml --state DIR

The route feature's ExaBGPSpeaker, built by the agent's own composition code, with ExaBGP as its
child exactly as fabricd runs it (its files in STATE/bgp), peering with the lab's FRR; no LXD, no
planner, no reconcile loop. Commands arrive as JSON lines on stdin, answers leave as JSON lines on
stdout; logs go to stderr. Times are time.monotonic(), which the benchmark outside the node shares
(network namespaces do not change clocks). `emit` and `LoopWatch` serve bench/agent_driver.py too.

Commands ("op"):
  start                          start the speaker and wait until every peer is established
  set {routes: [[prefix, next_hop], ...]}   one set_routes with exactly these routes
  status                         ExaBGP pid and starts, the event loop's worst stall since the
                                 last status (every line also carries RSS figures)
  quit                           stop the speaker (sessions close) and exit
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabricd.config import load_config
from fabricd.config.model import DaemonConfig
from fabricd.log import configure_logging
from fabricd.routes.model import Origin, Route

if TYPE_CHECKING:
    from fabricd.bgp.speaker import ExaBGPSpeaker

ESTABLISH_TIMEOUT = 60.0


def vm_kb(field: str, pid: int | str = "self") -> int | None:
    """VmRSS / VmHWM of a process in kB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def emit(**fields: Any) -> None:
    """One answer line; every line carries this process's peak and current RSS at that moment.

    VmHWM is the peak of this program's own memory. ru_maxrss is kept beside it but can be higher:
    Linux carries it over fork and exec, so it starts at the size of the process that launched us.
    """
    fields.setdefault("vmhwm_kb", vm_kb("VmHWM"))
    fields.setdefault("maxrss_kb", maxrss_kb())
    fields.setdefault("vmrss_kb", vm_kb("VmRSS"))
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class LoopWatch:
    """How late the event loop wakes up, and the garbage collector's pauses.

    A stall of 3 s starves the relay of heartbeats: it then stops ExaBGP and every route is
    withdrawn. Both figures are reported (and reset) with each status.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self._gc_began = 0.0
        self._reset()
        gc.callbacks.append(self._on_gc)

    def _reset(self) -> None:
        self.max_stall, self.over_1s, self.over_3s = 0.0, 0, 0
        self.gc_max, self.gc_total, self.gc_full = 0.0, 0.0, 0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_began
        self.gc_max = max(self.gc_max, took)
        self.gc_total += took
        self.gc_full += info.get("generation") == 2

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.TICK)
            stall = time.monotonic() - before - self.TICK
            self.max_stall = max(self.max_stall, stall)
            self.over_1s += stall > 1.0
            self.over_3s += stall > 3.0

    def take(self) -> dict[str, float | int]:
        """The figures since the last take, then start again."""
        figures = {
            "loop_max_stall_s": round(self.max_stall, 3),
            "stalls_over_1s": self.over_1s,
            "stalls_over_3s": self.over_3s,
            "gc_max_pause_s": round(self.gc_max, 3),
            "gc_total_s": round(self.gc_total, 3),
            "gc_full_collections": self.gc_full,
        }
        self._reset()
        return figures


Handler = Callable[[str, dict[str, Any]], Awaitable[bool]]


async def command_lines(handle: Handler) -> None:
    """Say hello, then hand each JSON line on stdin to `handle` until it returns False or stdin
    ends; a command that raises is answered with its error and the next one is read."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit(op="hello", pid=os.getpid())
    while line := await reader.readline():
        command = json.loads(line)
        op = str(command.get("op"))
        try:
            if not await handle(op, command):
                return
        except Exception as exc:  # report, keep serving: the benchmark decides what to do
            emit(op=op, error=f"{type(exc).__name__}: {exc}")


def speaker_status(speaker: ExaBGPSpeaker, watch: LoopWatch) -> dict[str, Any]:
    """ExaBGP's pid and starts, the peers, and the event loop's figures since the last status."""
    return {
        "exabgp_pid": speaker.exabgp_pid,
        "exabgp_starts": speaker.supervisor.starts,
        "peers": [p.as_dict(time.time()) for p in speaker.peers()],
        **watch.take(),
    }


async def answer_established(speaker: ExaBGPSpeaker, started: float) -> None:
    """Answer "start" once every peer is established (an error after ESTABLISH_TIMEOUT)."""
    while not all(p.state == "established" for p in speaker.peers()):
        if time.monotonic() - started > ESTABLISH_TIMEOUT:
            emit(op="start", error="peers not established", peers=[p.state for p in speaker.peers()])
            return
        await asyncio.sleep(0.02)
    emit(op="start", established_s=time.monotonic() - started, exabgp_pid=speaker.exabgp_pid)


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        # Imported after configure_logging: fabricd's module loggers bind the config current at import.
        from fabricd.agent.compose import route_feature
        from fabricd.agent.decisions import DecisionLog

        config = load_config(args.config)
        if config.bgp is None:
            raise SystemExit(f"{args.config}: no bgp section")
        self.config = dataclasses.replace(config, daemon=DaemonConfig(state_dir=args.state))
        self.routes = route_feature(self.config, DecisionLog(), lambda: None)
        if self.routes.speaker is None:
            raise SystemExit(f"{args.config}: no BGP speaker was built")
        self.speaker: ExaBGPSpeaker = self.routes.speaker
        self.watch = LoopWatch()

    async def handle(self, op: str, command: dict[str, Any]) -> bool:
        if op == "start":
            started = time.monotonic()
            await self.speaker.start()
            await answer_established(self.speaker, started)
        elif op == "set":
            routes = [_route(prefix, hop) for prefix, hop in command["routes"]]
            await self.set_routes(op, routes)
        elif op == "status":
            emit(op=op, **speaker_status(self.speaker, self.watch))
        elif op == "quit":
            return False
        else:
            emit(op=op, error="unknown command")
        return True

    async def set_routes(self, op: str, routes: Sequence[Route]) -> None:
        called = time.monotonic()
        await self.speaker.set_routes(routes)
        emit(op=op, t_call=called, t_done=time.monotonic(), routes=len(routes))


def _route(prefix: str, next_hop: str) -> Route:
    return Route(
        ip_network(prefix), ip_address(next_hop), Origin("user-route", "default", "bench", key=prefix)
    )


async def serve(args: argparse.Namespace) -> None:
    driver = Driver(args)
    driver.watch.task = asyncio.create_task(driver.watch.run())
    try:
        await command_lines(driver.handle)
    finally:
        if driver.watch.task is not None:
            driver.watch.task.cancel()
        await driver.speaker.stop()
        emit(op="bye")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the node's fabricd.yaml")
    parser.add_argument("--state", type=Path, required=True, help="ExaBGP state directory")
    args = parser.parse_args(argv)
    configure_logging("info", "json")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
