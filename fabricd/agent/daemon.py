"""The agent process: features wired to one reconcile loop, a status snapshot, a control socket.

The agent knows features only by their shape (`fabricd.agent.feature`); which features run is
decided in `fabricd.agent.compose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from fabricd import __version__
from fabricd.agent.compose import build_features
from fabricd.agent.control import ControlServer, ControlSocketInUse
from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import CommandHandler, Feature
from fabricd.agent.health import Verdict, verdict
from fabricd.agent.loop import ReconcileLoop
from fabricd.agent.metrics import MetricsServer, SnapshotCollector, start_metrics
from fabricd.agent.publisher import StatusPublisher
from fabricd.agent.reload import ConfigReload
from fabricd.agent.sd_notify import notify
from fabricd.agent.status import HostStatus, StatusSnapshot
from fabricd.agent.watchdog import STUCK_AFTER, Watchdog, watchdog_period
from fabricd.config import FabricConfig
from fabricd.log import get_logger

log = get_logger("fabricd.agent")
BACKGROUND_STOP_WAIT = 5.0


def _status(status: Mapping[str, Any], args: Mapping[str, Any]) -> Mapping[str, Any]:
    return status


def _sections(status: Mapping[str, Any], args: Mapping[str, Any]) -> Mapping[str, Any]:
    """Only the named top-level keys of the status (fabricctl's narrower views), never the rest."""
    keys = args.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("sections needs args.keys, a list of status keys")
    return {key: status[key] for key in keys if key in status}


class Agent:
    def __init__(
        self,
        config: FabricConfig,
        features: Sequence[Feature] | None = None,
        decisions: DecisionLog | None = None,
        *,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        """`features` and the `decisions` they record to replace the composed ones (benchmarks);
        `stuck_after`: how long a pass may run before the watchdog stops pinging systemd."""
        self.config = config  # as started; the running config after a reload is self.reload.config
        self.host = HostStatus(
            name=config.host.name,
            underlay_address=str(config.host.underlay_address),
            version=__version__,
            pid=os.getpid(),
            started_at=time.time(),
        )
        self.decisions = decisions if decisions is not None else DecisionLog()
        self._loop: ReconcileLoop | None = None
        self.features = (
            list(features) if features is not None else build_features(config, self.decisions, self.trigger)
        )
        self.loop = self._loop = ReconcileLoop(
            observers=[o for f in self.features for o in f.observers],
            planners=[p for f in self.features for p in f.planners],
            appliers=[a for f in self.features for a in f.appliers],
            interval=config.reconcile.interval,
            after_pass=self._pass_done,
        )
        self.reload = ConfigReload(config, self.features, self.loop, self.decisions, self.trigger)
        self.publisher = StatusPublisher(self.host, [*self.features, self.reload], self.loop, self.decisions)
        # The snapshot judged, weakly: holding it would keep a replaced snapshot (tens of MB at
        # scale) alive beside the current one until the next verdict.
        self._verdict: tuple[weakref.ref[StatusSnapshot], Verdict] | None = None
        self.commands: dict[str, CommandHandler] = {
            "status": _status,
            "sections": _sections,
            "health": lambda status, args: self.health().as_dict(),
            "events": lambda status, args: {"events": list(self.publisher.current.events)},
        }
        for feature in self.features:
            for name, handler in feature.commands().items():
                if name in self.commands:
                    raise ValueError(f"control command {name!r} is claimed twice (by {feature.name})")
                self.commands[name] = handler
        self.control = ControlServer(
            config.control.socket,
            config.control.mode,
            config.control.group,
            self.handle_request,
            self.commands,
            lambda: self.health().as_dict(),
            own_directory=config.daemon.state_dir,
        )
        self.metrics: MetricsServer | None = None
        self.stopping = asyncio.Event()
        self._stuck_after = stuck_after

    def trigger(self) -> None:
        if self._loop is not None:
            self._loop.trigger()

    def _pass_done(self) -> None:
        self.publisher.request()
        if self.loop.stats.passes == 1:
            # Ready once the first pass ran: what features build on it (devices that services
            # ordered after fabricd attach to) exists by then.
            notify("READY=1")

    def health_line(self) -> str:
        """One line for systemd's STATUS=: the last status snapshot's verdict."""
        found = self.health()
        if found.reasons:
            return f"degraded: {len(found.reasons)} problem(s); {found.reasons[0]}"[:200]
        return f"healthy: {self.publisher.current.reconcile.passes} reconcile passes"

    def health(self) -> Verdict:
        """The verdict on the last status snapshot, worked out once per snapshot."""
        snapshot = self.publisher.current
        cached = self._verdict
        if cached is None or cached[0]() is not snapshot:
            cached = self._verdict = (weakref.ref(snapshot), verdict(snapshot.as_dict(time.time())))
        return cached[1]

    def handle_request(
        self, command: str, args: dict[str, Any]
    ) -> Mapping[str, Any] | Awaitable[Mapping[str, Any]]:
        """Answered from the last snapshot: no I/O, nothing that can block the event loop (a command
        that changes state hands back an awaitable that does its I/O in a worker thread)."""
        status = self.publisher.current.as_dict(time.time())
        return self.commands[command](status, args)

    async def run(self) -> int:
        event_loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            event_loop.add_signal_handler(signum, self._on_signal, signum)
        event_loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        try:
            await self.control.start()
        except (ControlSocketInUse, OSError, KeyError) as exc:
            log.error("cannot open control socket", path=str(self.config.control.socket), reason=str(exc))
            return 1
        if not await self._start_metrics():
            await self.control.close()
            return 1
        log.info("fabricd started", host=self.host.name, version=__version__, config=str(self.config.source))
        background = [
            asyncio.ensure_future(work)
            for feature in self.features
            for work in feature.background(self.stopping)
        ]
        period = watchdog_period()
        if period is not None:
            features, line = self.features, self.health_line
            watchdog = Watchdog(self.loop, features, line, period, stuck_after=self._stuck_after)
            background.append(asyncio.ensure_future(watchdog.run(self.stopping)))
        try:
            for feature in self.features:
                await feature.start()
            await self.loop.run(self.stopping)
        finally:
            self.stopping.set()
            # Concurrently: one slow stop (a hung tool) must not delay another that withdraws
            # announcements.
            results = await asyncio.gather(*(f.stop() for f in self.features), return_exceptions=True)
            for feature, result in zip(self.features, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("feature stop failed", feature=feature.name, reason=repr(result))
            await self.reload.stop()
            await self._end(background)
            await self.publisher.close()
            await self.control.close()
            if self.metrics is not None:
                await asyncio.to_thread(self.metrics.close)
            log.info("fabricd stopped", host=self.host.name)
        return 0

    async def _start_metrics(self) -> bool:
        """Serve metrics.listen, if set; False (and a logged reason) when it cannot be bound."""
        address = self.config.metrics.listen_address()
        if address is None:
            return True
        collector = SnapshotCollector(lambda: self.publisher.current, self.health)
        try:
            self.metrics = await asyncio.to_thread(start_metrics, *address, collector)
        except OSError as exc:
            log.error("cannot open the metrics endpoint", listen=self.config.metrics.listen, reason=str(exc))
            return False
        return True

    @staticmethod
    async def _end(tasks: Sequence[asyncio.Future[None]]) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_WAIT)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_reload(self) -> None:
        log.info("reload requested", signal="SIGHUP")
        self.reload.request()

    def _on_signal(self, signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self.stopping.set()


def run_agent(config: FabricConfig) -> int:
    return asyncio.run(Agent(config).run())
