"""The health runner: one task per local backend, checking it every `interval`.

The plan's `checks` say what to check; `set_checks` starts a task for each new backend, restarts
one whose check changed (keeping its health) and stops the ones gone (forgetting their health).
Each result goes through the backend's state machine (`fabricd.services.health`); the loop is asked
for a pass only when a backend starts or stops serving, or its shown state changes (up → falling),
not for every check: a check that passes as before costs the agent nothing.

Checks start `interval` apart, start to start; a check never takes longer than its timeout, which
is at most the interval. The clock and the sleep are injected, so the tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fabricd.config.model import HealthCheckConfig
from fabricd.log import get_logger
from fabricd.routes.model import IPAddress
from fabricd.services import health
from fabricd.services.health import BackendHealth, Change, CheckResult, Rules
from fabricd.services.model import BackendId

log = get_logger("fabricd.services")


class CheckRunner(Protocol):
    async def check(
        self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None
    ) -> CheckResult: ...


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """What one backend's task runs: the check, where, and what its results count to."""

    check: HealthCheckConfig
    target: IPAddress | None
    rules: Rules


class HealthRunner:
    def __init__(
        self,
        checker: CheckRunner,
        on_change: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_serving: Callable[[BackendId, Change, BackendHealth], None] | None = None,
    ) -> None:
        """`on_serving` hears every change of a backend's `serving` (the event log)."""
        self._checker = checker
        self._on_change = on_change
        self._on_serving = on_serving
        self._clock = clock
        self._sleep = sleep
        self._specs: dict[BackendId, CheckSpec] = {}
        self._tasks: dict[BackendId, asyncio.Task[None]] = {}
        self._health: dict[BackendId, BackendHealth] = {}
        self._drained: Callable[[str], bool] = lambda service: False
        self.results: Counter[tuple[BackendId, bool]] = Counter()  # checks run, by outcome
        self.changes = 0  # steps that flipped a backend's `serving`

    def health(self) -> dict[BackendId, BackendHealth]:
        """A copy of every checked backend's health (values are immutable)."""
        return dict(self._health)

    def set_checks(self, wanted: Mapping[BackendId, CheckSpec]) -> None:
        for backend in [b for b in self._specs if b not in wanted]:
            self._cancel(backend)
            del self._specs[backend]
            self._health.pop(backend, None)
        for backend, spec in wanted.items():
            if self._specs.get(backend) == spec and backend in self._tasks:
                continue
            self._cancel(backend)
            self._specs[backend] = spec
            if backend not in self._health:
                self._health[backend] = self._drain_flag(backend, health.start(self._clock()))
            self._tasks[backend] = asyncio.create_task(self._run(backend, spec), name=f"check {backend}")

    def set_drained(self, drained: Callable[[str], bool]) -> None:
        """Which services are drained now: their backends show `drained` (checks go on)."""
        self._drained = drained
        for backend, current in list(self._health.items()):
            self._health[backend] = self._drain_flag(backend, current)

    def _drain_flag(self, backend: BackendId, current: BackendHealth) -> BackendHealth:
        want = self._drained(backend.service)
        if want == current.drained:
            return current
        step = (health.drain if want else health.undrain)(current, self._clock())
        return step.health

    def record(self, backend: BackendId, result: CheckResult, rules: Rules) -> None:
        """Feed one result to the backend's state machine; ask for a pass if it matters."""
        old = self._health.get(backend)
        if old is None:
            return  # stopped meanwhile
        self.results[(backend, result.ok)] += 1
        step = health.record(old, result, rules, self._clock())
        self._health[backend] = step.health
        if step.change is not None:
            self.changes += 1
            if self._on_serving is not None:
                self._on_serving(backend, step.change, step.health)
            log.info(
                "backend serving" if step.change.serving else "backend not serving",
                event_kind="service.backend",
                backend=str(backend),
                state=step.health.state,
                reason=step.change.reason,
            )
        if step.change is not None or step.health.state != old.state:
            self._on_change()

    async def _run(self, backend: BackendId, spec: CheckSpec) -> None:
        while True:
            started = self._clock()
            try:
                result = await self._checker.check(spec.check, backend, spec.target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # checkers do not raise; if one did, it is a failed check
                result = CheckResult(False, f"check failed: {type(exc).__name__}: {exc}", self._clock())
            self.record(backend, result, spec.rules)
            await self._sleep(max(0.0, started + spec.check.interval - self._clock()))

    def _cancel(self, backend: BackendId) -> None:
        task = self._tasks.pop(backend, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for backend in list(self._tasks):
            self._cancel(backend)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
