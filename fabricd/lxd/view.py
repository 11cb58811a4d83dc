"""LXD as a shared view: the observer, its event stream, and what it could not read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.status import HistogramMetric, Metric
from fabricd.config.model import LXDConfig
from fabricd.lxd.observer import LXDObserver


class LXDView(Feature):
    name = "lxd"

    def __init__(self, config: LXDConfig, on_change: Callable[[], None]) -> None:
        self.observer = LXDObserver(config, on_change)
        self.observers = (self.observer,)

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        return (self.observer.run(stop),)

    async def status(self) -> FeatureStatus:
        observation = self.observer.observation()
        problems = []
        if not observation.connected:
            held = " (holding the last known routes)" if observation.snapshot is not None else ""
            since = _ago(observation.unreachable_since)
            problems.append(f"lxd unreachable since {since}: {observation.error}{held}")
        if observation.snapshot is not None:
            for bad in observation.snapshot.refused:
                problems.append(f"lxd {bad.kind} {bad.project}/{bad.name} refused: {bad.reason}")
        metrics = (
            Metric("fabricd_lxd_connected", float(observation.connected), help="1 while the LXD API answers"),
            HistogramMetric(
                "fabricd_lxd_event_to_pass_seconds",
                self.observer.event_lag,
                help="from an LXD event that changed what fabricd knows to the start of the reconcile "
                "pass that plans with it",
            ),
        )
        return FeatureStatus(problems=tuple(problems), metrics=metrics)


def _ago(since: float | None) -> str:
    if since is None:
        return "start"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
