"""One reconcile loop: observe, plan, apply.

Observers read the world into immutable records, planners are pure functions from those records
to desired state, appliers make the smallest change towards it. The loop is level-triggered: a pass
always starts from fresh observations, so a missed trigger only delays convergence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fabricd.agent.status import ReconcileStats
from fabricd.log import get_logger

log = get_logger("fabricd.reconcile")


class Observer(Protocol):
    name: str

    async def observe(self) -> object: ...


class Planner(Protocol):
    name: str

    def plan(self, observed: Mapping[str, object]) -> object: ...


class Applier(Protocol):
    name: str  # the planner whose desired state it applies

    async def apply(self, desired: object) -> object: ...


@dataclass(frozen=True, slots=True)
class PassResult:
    observed: Mapping[str, object]
    desired: Mapping[str, object]
    applied: Mapping[str, object]


class ReconcileLoop:
    def __init__(
        self,
        observers: Sequence[Observer],
        planners: Sequence[Planner],
        appliers: Sequence[Applier],
        interval: float,
    ) -> None:
        self._observers = tuple(observers)
        self._planners = tuple(planners)
        self._appliers = tuple(appliers)
        self._interval = interval
        self._wakeup = asyncio.Event()
        self.stats = ReconcileStats()
        self.last_result: PassResult | None = None

    def trigger(self) -> None:
        """Ask for a pass now instead of at the next interval (events call this)."""
        self._wakeup.set()

    async def run_pass(self) -> PassResult:
        observed = {o.name: await o.observe() for o in self._observers}
        # Planners are pure but may take a while on a cold start; off the event loop they cannot
        # delay the speaker's heartbeats (a 3 s stall would withdraw every route).
        desired = {p.name: await asyncio.to_thread(p.plan, observed) for p in self._planners}
        applied = {a.name: await a.apply(desired.get(a.name)) for a in self._appliers}
        return PassResult(observed, desired, applied)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            started = time.monotonic()
            error: str | None = None
            try:
                self.last_result = await self.run_pass()
            except Exception as exc:  # one bad pass must not end the agent; the next pass retries
                error = f"{type(exc).__name__}: {exc}"
                log.exception("reconcile pass failed", event_kind="reconcile", reason=error)
            took = time.monotonic() - started
            self.stats = ReconcileStats(
                passes=self.stats.passes + 1,
                last_pass_at=time.time(),
                last_pass_seconds=round(took, 6),
                last_error=error,
            )
            log.debug("reconcile pass done", passes=self.stats.passes, seconds=round(took, 6))
            await _wait_any(stop, self._wakeup, self._interval)


async def _wait_any(stop: asyncio.Event, wakeup: asyncio.Event, timeout: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
