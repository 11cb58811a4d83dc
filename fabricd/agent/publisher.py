"""The status snapshot: rebuilt after every reconcile pass, off the control path.

Features build their parts (any I/O in worker threads); a feature whose part is slow keeps its
last part, marked with a problem, so one hung tool (nft, say) never freezes the whole status.
Readers (the control socket, later the metrics endpoint and the watchdog) only ever read
`current`, which is replaced whole and never changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import ReconcileLoop
from fabricd.agent.status import HistogramMetric, HostStatus, Metric, Sample, StatusSnapshot
from fabricd.log import get_logger

log = get_logger("fabricd.status")

FEATURE_STATUS_TIMEOUT = 5.0


class StatusPublisher:
    def __init__(
        self,
        host: HostStatus,
        features: Sequence[Feature],
        loop: ReconcileLoop,
        decisions: DecisionLog,
        timeout: float = FEATURE_STATUS_TIMEOUT,
    ) -> None:
        self._features = tuple(features)
        self._loop = loop
        self._decisions = decisions
        self._timeout = timeout
        self._last: dict[int, FeatureStatus] = {}
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.current = StatusSnapshot(host)

    def request(self) -> None:
        """Rebuild soon; requests during a build coalesce into one more build after it."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._build(), name="status-snapshot")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _build(self) -> None:
        while True:
            self._again = False
            self.current = await self.snapshot()
            if not self._again:
                return

    async def _feature_status(self, feature: Feature) -> tuple[FeatureStatus, str | None]:
        last = self._last.get(id(feature), FeatureStatus())
        try:
            status = await asyncio.wait_for(feature.status(), self._timeout)
        except TimeoutError:
            return last, f"{feature.name} status not refreshed: no answer within {self._timeout:g} s"
        except Exception as exc:  # a broken status part must not take the others with it
            log.exception("feature status failed", feature=feature.name, reason=str(exc))
            return last, f"{feature.name} status not refreshed: {type(exc).__name__}: {exc}"
        self._last[id(feature)] = status
        return status, None

    def _loop_metrics(self) -> tuple[Sample, ...]:
        loop = self._loop
        return (
            Metric(
                "fabricd_reconcile_passes_total",
                loop.stats.passes,
                help="reconcile passes run",
                kind="counter",
            ),
            HistogramMetric(
                "fabricd_reconcile_pass_seconds", loop.pass_seconds, help="how long each reconcile pass took"
            ),
            Metric(
                "fabricd_reconcile_failing_steps", len(loop.health()), help="steps failing now (backing off)"
            ),
        )

    async def snapshot(self) -> StatusSnapshot:
        parts = await asyncio.gather(*(self._feature_status(f) for f in self._features))
        sections: dict[str, object] = {}
        problems: list[str] = [step.summary() for step in self._loop.health()]
        metrics: list[Sample] = list(self._loop_metrics())
        for status, stale in parts:
            sections.update(status.sections)
            problems += status.problems
            metrics += status.metrics
            if stale is not None:
                problems.append(stale)
        return StatusSnapshot(
            host=self.current.host,
            reconcile=self._loop.stats,
            sections=sections,
            problems=tuple(problems),
            metrics=tuple(metrics),
            events=self._decisions.recent(),
            built_at=time.time(),
        )
