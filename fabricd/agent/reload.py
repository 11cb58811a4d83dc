"""Config reload on SIGHUP: read and validate the file again, then apply what changed, or nothing.

The file is read and checked as `fabricd check-config` does, in a worker thread. An invalid file,
or one that changes a key needing a restart, leaves the running config in force; the reason is
logged, recorded as a `config.reload` event, and stays a status problem until a later reload
succeeds. A valid one is handed to every feature between two reconcile passes (`Feature.reconfigure`)
and a pass follows at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import ReconcileLoop
from fabricd.config import ConfigError, FabricConfig, load_config
from fabricd.config.reload import config_change
from fabricd.log import get_logger

log = get_logger("fabricd.config")

Outcome = Literal["applied", "unchanged", "invalid", "refused", "failed"]
OK_OUTCOMES = ("applied", "unchanged")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    at: float
    outcome: Outcome
    reason: str
    changed: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())  # check-config's lines for an invalid file

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "ok": self.ok,
            "outcome": self.outcome,
            "reason": self.reason,
            "changed": list(self.changed),
            "problems": list(self.problems),
        }


class ConfigReload(Feature):
    """Holds the running config; `request()` (the SIGHUP handler) starts one reload at a time."""

    name = "config-reload"

    def __init__(
        self,
        config: FabricConfig,
        features: Sequence[Feature],
        loop: ReconcileLoop,
        decisions: DecisionLog,
        on_change: Callable[[], None],
    ) -> None:
        self.config = config
        self._features = tuple(features)
        self._loop = loop
        self._decisions = decisions
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.last: ReloadResult | None = None
        self.loaded_at = time.time()

    def request(self) -> None:
        """Reload soon; a request during a reload makes one more after it (the file may have
        changed again since it was read)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="config-reload")

    async def wait(self) -> None:
        """Until the reload under way (if any) is done."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._again = False
            self.last = await self.reload()
            self._record(self.last)
            self._on_change()
            if not self._again:
                return

    async def reload(self) -> ReloadResult:
        file = str(self.config.source)
        log.info("config reload requested", file=file)
        try:
            new = await asyncio.to_thread(load_config, self.config.source)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error(
                    "config reload: invalid config, the running one stays",
                    event_kind="config.reload",
                    file=problem.file,
                    line=problem.line,
                    key=problem.key_path or "<top level>",
                    reason=problem.message,
                    problem=str(problem),  # the line check-config prints
                )
            lines = tuple(str(p) for p in exc.problems)
            reason = f"invalid config: {lines[0]}" + (
                f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            )
            return ReloadResult(time.time(), "invalid", reason, problems=lines)
        change = await asyncio.to_thread(config_change, self.config, new)
        if not change.live:
            for why in change.refused:
                log.error("config reload refused, the running config stays", file=file, reason=why)
            return ReloadResult(time.time(), "refused", change.summary(), change.changed)
        if not change.changed:
            return ReloadResult(time.time(), "unchanged", "no change")
        try:
            async with self._loop.paused():
                for feature in self._features:
                    await feature.reconfigure(new, change)
        except Exception as exc:
            # ExaBGP's file could not be written, say. The speaker is the only part that does I/O
            # and it fails before changing anything; the features after it were not reached.
            log.exception("config reload failed", file=file, reason=str(exc))
            return ReloadResult(time.time(), "failed", f"{type(exc).__name__}: {exc}", change.changed)
        self.config = new
        self.loaded_at = time.time()
        log.info("config reloaded", file=file, changed=list(change.changed))
        return ReloadResult(time.time(), "applied", change.summary(), change.changed)

    def _record(self, result: ReloadResult) -> None:
        self._decisions.record(
            "config.reload",
            str(self.config.source),
            f"config reload {result.outcome}: {result.reason}",
            outcome=result.outcome,
        )

    async def status(self) -> FeatureStatus:
        last = self.last
        section = {
            "file": str(self.config.source),
            "loaded_at": self.loaded_at,
            "last_reload": None if last is None else last.as_dict(),
        }
        problems: tuple[str, ...] = ()
        if last is not None and not last.ok:
            problems = (f"config reload {last.outcome}, the running config stays in force: {last.reason}",)
        return FeatureStatus(sections={"config": section}, problems=problems)
