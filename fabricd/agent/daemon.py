"""The agent process: LXD observer, reconcile loop, BGP speaker, control socket; clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from fabricd import __version__
from fabricd.agent.control import ControlServer, ControlSocketInUse
from fabricd.agent.overlay_status import overlay_peer_rows, overlay_problems, overlay_section
from fabricd.agent.overlay_steps import OverlayApplying, OverlayPlanning, UnderlayObserver
from fabricd.agent.reconcile import ReconcileLoop
from fabricd.agent.route_status import route_rows
from fabricd.agent.route_steps import RouteAnnouncing, RoutePlanning
from fabricd.agent.sd_notify import notify
from fabricd.agent.status import HostStatus, StatusSnapshot
from fabricd.bgp.speaker import ExaBGPSpeaker
from fabricd.config import FabricConfig
from fabricd.log import get_logger
from fabricd.lxd.observer import LXDObserver
from fabricd.overlay.manager import OverlayManager
from fabricd.routes.incremental import IncrementalPlanner

log = get_logger("fabricd.agent")
# Overlay peers from the cluster: LXD sends no event when a member goes offline, so poll this often.
MEMBER_POLL_INTERVAL = 0.5


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
        overlay = config.overlay
        member_poll = MEMBER_POLL_INTERVAL if overlay.enabled and overlay.peers_from_lxd_cluster else None
        self.lxd = LXDObserver(config.lxd, on_change=self._lxd_changed, member_interval=member_poll)
        self.overlay: OverlayManager | None = None
        self.underlay: UnderlayObserver | None = None
        self.overlay_applying: OverlayApplying | None = None
        observers: list[Any] = [self.lxd]
        planners: list[Any] = [RoutePlanning(IncrementalPlanner(config))]
        appliers: list[Any] = []
        if overlay.enabled:
            self.overlay = OverlayManager(config, config.control.socket.parent)
            self.underlay = UnderlayObserver(self.overlay)
            self.overlay_applying = OverlayApplying(self.overlay, recheck=config.reconcile.interval)
            observers.append(self.underlay)
            planners.append(OverlayPlanning(config))
            appliers.append(self.overlay_applying)
        self.speaker = (
            ExaBGPSpeaker(config.bgp, config.host, config.control.socket.parent / "bgp")
            if config.bgp is not None
            else None
        )
        self.announcing = RouteAnnouncing(self.speaker)
        appliers.insert(0, self.announcing)
        self.loop = ReconcileLoop(
            observers=observers,
            planners=planners,
            appliers=appliers,
            interval=config.reconcile.interval,
        )
        self.control = ControlServer(
            config.control.socket, config.control.mode, config.control.group, self.handle_request
        )
        self.stopping = asyncio.Event()

    def _lxd_changed(self) -> None:
        self.loop.trigger()

    def snapshot(self) -> StatusSnapshot:
        plan = self.announcing.plan
        states = self.speaker.route_states() if self.speaker is not None else {}
        peers = self.speaker.peers() if self.speaker is not None else ()
        now = time.time()
        return StatusSnapshot(
            host=self.host,
            reconcile=self.loop.stats,
            bgp_peers=tuple(p.as_dict(now) for p in peers),
            routes=tuple(route_rows(plan, states)),
            overlay_peers=tuple(overlay_peer_rows(self._overlay_plan())),
            overlay=self._overlay_status(),
            problems=tuple(self._problems()),
        )

    def _overlay_plan(self) -> Any:
        return self.overlay_applying.applied.plan if self.overlay_applying is not None else None

    def _overlay_status(self) -> dict[str, Any] | None:
        if self.overlay is None or self.overlay_applying is None or self.underlay is None:
            return None
        return overlay_section(
            self.config, self.overlay_applying.applied, self.underlay.last, self.overlay.firewall_status()
        )

    def _problems(self) -> list[str]:
        problems = []
        observation = self.lxd.observation()
        if not observation.connected:
            held = " (holding the last known routes)" if observation.snapshot is not None else ""
            since = _ago(observation.unreachable_since)
            problems.append(f"lxd unreachable since {since}: {observation.error}{held}")
        if observation.snapshot is not None:
            for bad in observation.snapshot.refused:
                problems.append(f"lxd {bad.kind} {bad.project}/{bad.name} refused: {bad.reason}")
        if self.overlay_applying is not None and self.underlay is not None:
            configured_mtu = self.config.overlay.mtu is not None
            problems += overlay_problems(self.overlay_applying.applied, self.underlay.last, configured_mtu)
        return problems

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
        observer = asyncio.create_task(self.lxd.run(self.stopping), name="lxd-observer")
        ready = asyncio.create_task(self._notify_ready(), name="sd-notify")
        try:
            if self.speaker is not None:
                await self.speaker.start()
            await self.loop.run(self.stopping)
        finally:
            self.stopping.set()
            ready.cancel()
            if self.speaker is not None:
                await self.speaker.stop()  # ExaBGP goes: its sessions close and peers withdraw
            if self.overlay is not None:
                # The overlay stays up so instances keep talking; only the VXLAN filter goes.
                await asyncio.to_thread(self.overlay.stop)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(observer, timeout=5)
            await self.control.close()
            log.info("fabricd stopped", host=self.host.name)
        return 0

    async def _notify_ready(self) -> None:
        """Ready once the first pass ran: the overlay bridge exists before LXD starts instances on it
        (the unit orders fabricd before LXD)."""
        while self.loop.stats.passes < 1:
            await asyncio.sleep(0.05)
        notify("READY=1")

    def _on_signal(self, signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self.stopping.set()


def _ago(since: float | None) -> str:
    if since is None:
        return "start"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))


def run_agent(config: FabricConfig) -> int:
    return asyncio.run(Agent(config).run())
