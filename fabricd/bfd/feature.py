"""BFD for the BGP sessions as a feature: config → BIRD's file → the running BIRD, and its sessions.

- planner: the BIRD file from the config (pure; the same text every pass unless the peers change);
- applier: hands it to `BirdBFD`, which reconfigures a running BIRD only when the text changed;
- observer: the sessions as BIRD reports them, read each pass, and by a watcher every
  `poll_interval` so a session that goes down or comes up is in the status (and the event log)
  within about a second rather than at the next reconcile pass.

The router does the useful part: its BGP session follows the BFD session, so a host whose link or
machine dies is dropped (with its routes) after interval times multiplier instead of the hold time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.agent.status import Metric
from fabricd.bfd.bird import BirdBFD
from fabricd.bfd.bird_config import render_bird_config
from fabricd.bfd.sessions import BFD_SESSIONS, BFDObservation, session_problems, session_rows
from fabricd.config.model import BGPConfig, FabricConfig, HostConfig, IPAddress
from fabricd.config.reload import ConfigChange
from fabricd.log import get_logger

log = get_logger("fabricd.bfd")

BIRD_CONFIG: Key[str] = Key("bfd-bird-config")
POLL_INTERVAL = 1.0


class BirdConfigPlanning:
    key = BIRD_CONFIG
    inputs: tuple[Key[Any], ...] = ()

    def __init__(self, bgp: BGPConfig, host: HostConfig) -> None:
        self._bgp, self._host = bgp, host

    def plan(self, observed: Observations) -> str:
        return render_bird_config(self._bgp, self._host)


class BirdConfigApplying:
    name = "bfd"
    inputs = (BIRD_CONFIG,)

    def __init__(self, bird: BirdBFD) -> None:
        self._bird = bird

    async def apply(self, desired: Observations) -> bool:
        text = desired.get(BIRD_CONFIG)
        return text is not None and await self._bird.apply(text)


class BFDSessionObserver:
    key = BFD_SESSIONS

    def __init__(self, read: Callable[[], Awaitable[BFDObservation]]) -> None:
        self._read = read

    async def observe(self) -> BFDObservation:
        return await self._read()


class BFDFeature(Feature):
    name = "bfd"

    def __init__(
        self,
        bgp: BGPConfig,
        host: HostConfig,
        state_dir: Path,
        decisions: DecisionLog,
        on_change: Callable[[], None],
        *,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.bgp = bgp
        self.bird = BirdBFD(state_dir, bgp.bird)
        self.planning = BirdConfigPlanning(bgp, host)
        self.first_text = render_bird_config(bgp, host)  # fails here, before anything runs
        self._decisions = decisions
        self._on_change = on_change
        self.poll_interval = poll_interval
        self.last: BFDObservation | None = None
        self._states: dict[IPAddress, str] = {}
        self.observers = (BFDSessionObserver(self._read),)
        self.planners = (self.planning,)
        self.appliers = (BirdConfigApplying(self.bird),)

    async def start(self) -> None:
        await self.bird.start(self.first_text)

    async def stop(self) -> None:
        await self.bird.stop()

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        # A peer's BFD settings, or a peer added or removed: the next pass writes BIRD's new file
        # and the applier hands it to the running BIRD (`birdc configure`), nothing else restarts.
        if config.bgp is not None:
            self.bgp = self.planning._bgp = config.bgp

    def dead(self) -> str | None:
        return self.bird.dead()

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        return (self._watch(stop),)

    async def _read(self) -> BFDObservation:
        observed = await self.bird.sessions()
        self.last = observed
        if self._changed(observed):
            self._on_change()
        return observed

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            if not stop.is_set() and self.bird.pid is not None:
                await self._read()

    def _changed(self, observed: BFDObservation) -> bool:
        """Records each session's state change once; True when any changed."""
        if observed.error is not None:
            return False  # BIRD is restarting: its sessions are unknown, not down
        changed = False
        found = observed.by_address()
        for peer in self.bgp.bfd_peers:
            session = found.get(peer.address)
            state = session.state if session is not None else "absent"
            old = self._states.get(peer.address)
            if old == state:
                continue
            self._states[peer.address] = state
            changed = True
            self._decisions.record(
                "bfd.session",
                f"{peer.name} {peer.address}",
                f"bfd session with {peer.name} ({peer.address}) is {state}"
                + (f" (was {old})" if old else ""),
                state=state,
            )
        return changed

    async def status(self) -> FeatureStatus:
        now = time.time()
        rows = session_rows(self.bgp.peers, self.last, now)
        problems = session_problems(rows, self.last)
        metrics = [
            Metric(
                "fabricd_bfd_session_up",
                1.0 if row["state"] == "Up" else 0.0,
                (("peer", row["peer"]), ("address", row["address"])),
                "1 while the BFD session with the BGP peer is Up",
            )
            for row in rows
        ]
        metrics.append(
            Metric("fabricd_bfd_daemon_starts", float(self.bird.child.starts), (), "BIRD starts", "counter")
        )
        child = self.bird.child
        daemon = {
            "pid": child.pid,
            "starts": child.starts,
            "last_exit": child.last_exit,
            "reconfigures": self.bird.configures,
            "config_file": str(self.bird.config_file),
        }
        return FeatureStatus(
            sections={"bfd_sessions": rows, "bfd_daemon": daemon},
            problems=tuple(problems),
            metrics=tuple(metrics),
        )
