"""The agent process: control socket, reconcile loop, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from fabricd import __version__
from fabricd.agent.control import ControlServer, ControlSocketInUse
from fabricd.agent.reconcile import ReconcileLoop
from fabricd.agent.status import HostStatus, StatusSnapshot
from fabricd.config import FabricConfig
from fabricd.log import get_logger

log = get_logger("fabricd.agent")


class Agent:
    def __init__(self, config: FabricConfig) -> None:
        self.config = config
        self.host = HostStatus(
            name=config.host.name,
            underlay_address=str(config.host.underlay_address),
            version=__version__,
            pid=os.getpid(),
            started_at=time.time(),
        )
        # Planners arrive with the features that need them; the loop already runs with none.
        self.loop = ReconcileLoop(observers=(), planners=(), appliers=(), interval=config.reconcile.interval)
        self.control = ControlServer(
            config.control.socket, config.control.mode, config.control.group, self.handle_request
        )
        self.stopping = asyncio.Event()

    def snapshot(self) -> StatusSnapshot:
        return StatusSnapshot(host=self.host, reconcile=self.loop.stats)

    def handle_request(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        status = self.snapshot().as_dict(time.time())
        if command == "routes":
            return {"routes": status["routes"]}
        return status

    async def run(self) -> int:
        event_loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            event_loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            await self.control.start()
        except (ControlSocketInUse, OSError, KeyError) as exc:
            log.error("cannot open control socket", path=str(self.config.control.socket), reason=str(exc))
            return 1
        log.info("fabricd started", host=self.host.name, version=__version__, config=str(self.config.source))
        try:
            await self.loop.run(self.stopping)
        finally:
            await self.control.close()
            log.info("fabricd stopped", host=self.host.name)
        return 0

    def _on_signal(self, signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self.stopping.set()


def run_agent(config: FabricConfig) -> int:
    return asyncio.run(Agent(config).run())
