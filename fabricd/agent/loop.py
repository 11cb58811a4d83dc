"""One reconcile loop: observe, plan, apply, with every step isolated from the others.

Observers read the world into immutable records, planners are pure functions from those records
to desired state, appliers make the smallest change towards it. The loop is level-triggered: a
pass always starts from fresh observations, so a missed trigger only delays convergence.

Steps are joined by typed keys (`Key[T]`), never by strings. Several planners may feed one key
(service routes join LXD routes); an applier sees every contribution, in registration order.

A step that raises fails only itself: it is retried with backoff, shown as a problem, and the
steps that do not depend on it still run. A step that depends on a failed or backing-off step is
skipped for the pass, so an applier never acts on a missing plan (an empty route set would
withdraw everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fabricd.agent.histogram import Histogram
from fabricd.agent.status import ReconcileStats, StepHealth
from fabricd.log import get_logger

log = get_logger("fabricd.reconcile")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


class Key(Generic[T]):
    """A typed name for what one step hands the next. Compared by identity: two keys with the same
    name are still two keys."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class Observations:
    """What this pass observed and planned, read through typed keys."""

    def __init__(self) -> None:
        self._values: dict[Key[Any], list[Any]] = {}

    def put(self, key: Key[T], value: T) -> None:
        self._values.setdefault(key, []).append(value)

    def get(self, key: Key[T]) -> T | None:
        """The one value under `key`, or None when no step produced it this pass."""
        values = self._values.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise LookupError(f"{key.name} has {len(values)} contributions; read it with all()")
        value: T = values[0]
        return value

    def all(self, key: Key[T]) -> tuple[T, ...]:
        """Every contribution under `key`, in the order the steps were registered."""
        return tuple(self._values.get(key, ()))

    def has(self, key: Key[Any]) -> bool:
        return bool(self._values.get(key))


class Observer(Protocol[T_co]):
    @property
    def key(self) -> Key[Any]: ...

    async def observe(self) -> T_co: ...


class Planner(Protocol):
    """Pure: runs in a worker thread, so a long cold plan cannot stall the event loop."""

    @property
    def key(self) -> Key[Any]: ...

    @property
    def inputs(self) -> Sequence[Key[Any]]: ...

    def plan(self, observed: Observations) -> object: ...


class Applier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> Sequence[Key[Any]]: ...

    async def apply(self, desired: Observations) -> object: ...


@dataclass(slots=True)
class _StepState:
    kind: str
    name: str
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    failed_at: float | None = None

    def health(self) -> StepHealth:
        return StepHealth(self.kind, self.name, self.failures, self.last_error, self.failed_at)


class ReconcileLoop:
    def __init__(
        self,
        observers: Sequence[Observer[Any]],
        planners: Sequence[Planner],
        appliers: Sequence[Applier],
        interval: float,
        *,
        after_pass: Callable[[], None] | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._observers = tuple(observers)
        self._planners = tuple(planners)
        self._appliers = tuple(appliers)
        self._check_wiring()
        self._interval = interval
        self._after_pass = after_pass
        self._backoff = (backoff_initial, backoff_max)
        self._wakeup = asyncio.Event()
        self._pass_lock = asyncio.Lock()  # held for each pass; `paused` waits for it
        self._steps: dict[int, _StepState] = {}
        self.stats = ReconcileStats()
        self.pass_seconds = Histogram()  # replaced whole after each pass; read by the metrics endpoint
        # Monotonic times for the watchdog: when the running pass began (None between passes), and
        # when the loop last began or ended one.
        self.pass_started_at: float | None = None
        self.progress_at = time.monotonic()

    def _check_wiring(self) -> None:
        produced = {o.key for o in self._observers} | {p.key for p in self._planners}
        steps: list[Planner | Applier] = [*self._planners, *self._appliers]
        for step in steps:
            missing = [k.name for k in step.inputs if k not in produced]
            if missing:
                raise ValueError(f"{_label(step)} reads {', '.join(missing)}, which no step produces")

    def trigger(self) -> None:
        """Ask for a pass now instead of at the next interval (events call this)."""
        self._wakeup.set()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Between passes: no step runs while the caller swaps what steps read (a new config)."""
        async with self._pass_lock:
            yield

    def health(self) -> tuple[StepHealth, ...]:
        """Steps that are failing now, with their last error."""
        return tuple(s.health() for s in self._steps.values() if s.failures)

    def _state(self, kind: str, step: object, name: str) -> _StepState:
        state = self._steps.get(id(step))
        if state is None:
            state = self._steps[id(step)] = _StepState(kind, name)
        return state

    async def _run_step(
        self, kind: str, step: object, name: str, work: Callable[[], Any]
    ) -> tuple[bool, Any]:
        state = self._state(kind, step, name)
        if state.failures and time.monotonic() < state.retry_at:
            return False, None
        try:
            result = await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failing step must not stop the others
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            state.failed_at = time.time()
            low, high = self._backoff
            delay = min(high, low * 2 ** (state.failures - 1))
            state.retry_at = time.monotonic() + delay
            log.exception(
                "reconcile step failed",
                event_kind="step.failed",
                step=f"{kind} {name}",
                failures=state.failures,
                retry_in=delay,
                reason=state.last_error,
            )
            return False, None
        if state.failures:
            log.info("reconcile step recovered", event_kind="step.recovered", step=f"{kind} {name}")
        state.failures, state.last_error, state.failed_at = 0, None, None
        return True, result

    async def run_pass(self) -> Observations:
        seen = Observations()
        for observer in self._observers:
            ok, value = await self._run_step("observer", observer, observer.key.name, observer.observe)
            if ok:
                seen.put(observer.key, value)
        for planner in self._planners:
            if not all(seen.has(k) for k in planner.inputs):
                continue  # an input failed (or produced nothing): keep what was planned before

            async def plan(planner: Planner = planner) -> object:
                return await asyncio.to_thread(planner.plan, seen)

            ok, value = await self._run_step("planner", planner, planner.key.name, plan)
            if ok and value is not None:
                seen.put(planner.key, value)
        for applier in self._appliers:
            if not all(seen.has(k) for k in applier.inputs):
                continue

            async def apply(applier: Applier = applier) -> object:
                return await applier.apply(seen)

            await self._run_step("applier", applier, applier.name, apply)
        return seen

    @property
    def interval(self) -> float:
        return self._interval

    def _next_wait(self) -> float:
        retries = [s.retry_at for s in self._steps.values() if s.failures]
        if not retries:
            return self._interval
        return max(0.0, min(self._interval, min(retries) - time.monotonic()))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            started = self.pass_started_at = self.progress_at = time.monotonic()
            try:
                async with self._pass_lock:
                    await self.run_pass()
            finally:
                self.pass_started_at = None
            took = time.monotonic() - started
            self.progress_at = time.monotonic()
            self.pass_seconds = self.pass_seconds.observe(took)
            failing = self.health()
            self.stats = ReconcileStats(
                passes=self.stats.passes + 1,
                last_pass_at=time.time(),
                last_pass_seconds=round(took, 6),
                last_error=failing[0].summary() if failing else None,
            )
            log.debug("reconcile pass done", passes=self.stats.passes, seconds=round(took, 6))
            if self._after_pass is not None:
                self._after_pass()
            await _wait_any(stop, self._wakeup, self._next_wait())


def _label(step: object) -> str:
    name = getattr(step, "name", None) or getattr(getattr(step, "key", None), "name", "?")
    return f"{type(step).__name__} ({name})"


async def _wait_any(stop: asyncio.Event, wakeup: asyncio.Event, timeout: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
