"""Routes as a feature: LXD snapshot → route plan(s) → BGP speaker, and their status.

Planners contribute `RoutePlan`s under ROUTE_PLANS (LXD's here; service addresses later); the
announcing step merges them under the same rules and hands the speaker the whole desired set.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import CommandHandler, Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.agent.status import Metric
from fabricd.bgp.paths import SESSION_PATHS, SessionPathObserver
from fabricd.bgp.peer_state import PeerStatus
from fabricd.bgp.speaker import ExaBGPSpeaker, SpeakerView
from fabricd.config.model import FabricConfig
from fabricd.config.reload import ConfigChange
from fabricd.lxd.observer import LXD
from fabricd.routes.incremental import IncrementalPlanner
from fabricd.routes.merge import merge_route_plans, route_decisions
from fabricd.routes.model import Route, RoutePlan
from fabricd.routes.reasons import reason_class
from fabricd.routes.status import RouteRows

ROUTE_PLANS: Key[RoutePlan] = Key("routes")


class LXDRoutePlanning:
    """Plans routes from the LXD observation; nothing until LXD was read once (nothing is known).

    With BGP peers, next hops are checked against the sessions' paths, so this waits for those
    too: planning without them would flip OVN next hops between passes."""

    key = ROUTE_PLANS

    def __init__(self, planner: IncrementalPlanner, check_paths: bool) -> None:
        self._planner = planner
        self.inputs: tuple[Key[Any], ...] = (LXD, SESSION_PATHS) if check_paths else (LXD,)

    def plan(self, observed: Observations) -> RoutePlan | None:
        observation = observed.get(LXD)
        if observation is None or observation.snapshot is None:
            return None
        # While LXD is away the observer keeps its last snapshot, so this plan (and the
        # announcements) stay as they were instead of flapping.
        return self._planner.update(observation.snapshot, observed.get(SESSION_PATHS))


class RouteAnnouncing:
    """Merges every contribution and hands the speaker the whole set; the speaker sends the diff."""

    name = "routes"
    inputs = (ROUTE_PLANS,)

    def __init__(self, speaker: ExaBGPSpeaker | None, max_prefixes: int, decisions: DecisionLog) -> None:
        self._speaker = speaker
        self.max_prefixes = max_prefixes
        self._decisions = decisions
        self.plan = RoutePlan()
        self._merged: tuple[tuple[RoutePlan, ...], int, RoutePlan | None] = ((), max_prefixes, None)

    async def apply(self, desired: Observations) -> RoutePlan:
        plans = tuple(desired.all(ROUTE_PLANS))
        merged = self._merged
        if merged[2] is self.plan and merged[1] == self.max_prefixes and _same_plans(plans, merged[0]):
            # Planners rebuild equal plans every pass; keep the identity the status caches on.
            plan = self.plan
        elif len(plans) == 1:
            plan = plans[0]
        else:
            plan = await asyncio.to_thread(merge_route_plans, plans, self.max_prefixes)
        self._merged = (plans, self.max_prefixes, plan)
        old, self.plan = self.plan, plan
        if self._speaker is not None:
            await self._speaker.set_routes(plan.routes)
        if plan is not old:
            changes = await asyncio.to_thread(route_decisions, old, plan, self._decisions.per_batch_limit)
            for event, (items, total) in changes.items():
                self._decisions.record_batch(event, items, total)
        return plan


class RouteFeature(Feature):
    name = "routes"

    def __init__(
        self,
        config: FabricConfig,
        state_dir: Path,
        decisions: DecisionLog,
        on_change: Callable[[], None],
    ) -> None:
        self.planner = IncrementalPlanner(config)
        self.speaker = (
            ExaBGPSpeaker(config.bgp, config.host, state_dir / "bgp") if config.bgp is not None else None
        )
        self._decisions = decisions
        if self.speaker is not None:
            self.speaker.on_change = on_change
            self.speaker.on_peer = self._peer_changed
        self.announcing = RouteAnnouncing(self.speaker, config.routes.max_prefixes, decisions)
        self.paths = SessionPathObserver(config.bgp.peers) if config.bgp is not None else None
        self.observers = (self.paths,) if self.paths is not None else ()
        self.planners = (LXDRoutePlanning(self.planner, self.paths is not None),)
        self.appliers = (self.announcing,)
        # (plan, speaker version, rows, rows by state and reason): rebuilt only when either changed
        self._rows: tuple[object, int, list[dict[str, Any]], Counter[tuple[str, str]]] | None = None
        # Reused rows are checked against route, note and peers, so even two builds at once stay right.
        self._row_builder = RouteRows()

    def _peer_changed(self, status: PeerStatus, reason: str | None) -> None:
        why = f": {reason}" if reason else ""
        self._decisions.record(
            "bgp.peer",
            f"{status.name} {status.address}",
            f"bgp session with {status.name} ({status.address}) is {status.state}{why}",
            state=status.state,
        )

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"routes": lambda status, args: {"routes": status["routes"]}}

    async def start(self) -> None:
        if self.speaker is not None:
            await self.speaker.start()

    def dead(self) -> str | None:
        return self.speaker.dead() if self.speaker is not None else None

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        # The speaker first: it is the one part that does I/O and can fail.
        if self.speaker is not None and config.bgp is not None and change.bgp_peers.any:
            await self.speaker.reconfigure(config.bgp, change.bgp_peers)
        if self.paths is not None and config.bgp is not None:
            self.paths.reconfigure(config.bgp.peers)
        self.planner.reconfigure(config)
        self.announcing.max_prefixes = config.routes.max_prefixes

    def announced(self, kind: str) -> tuple[Route, ...]:
        """The routes of one origin kind ("service") in the set last handed to the speaker."""
        return tuple(r for r in self.announcing.plan.routes if r.origin.kind == kind)

    async def withdraw(self, kind: str) -> None:
        """Withdraw every route of one origin kind now, keeping the others (a stopping feature's)."""
        plan = self.announcing.plan
        kept = RoutePlan(tuple(r for r in plan.routes if r.origin.kind != kind), plan.refused, plan.withheld)
        self.announcing.plan = kept
        if self.speaker is not None and self.speaker.exabgp_pid is not None:
            await self.speaker.set_routes(kept.routes)

    def speaker_running(self) -> bool:
        return self.speaker is not None and self.speaker.exabgp_pid is not None

    async def stop(self) -> None:
        if self.speaker is not None:
            await self.speaker.stop()  # ExaBGP goes: its sessions close and peers withdraw

    async def status(self) -> FeatureStatus:
        plan = self.announcing.plan
        version = -1 if self.speaker is None else self.speaker.version
        cached = self._rows
        if cached is not None and cached[0] is plan and cached[1] == version:
            rows, counts = cached[2], cached[3]
        else:  # copy on the loop (a few ms at 50,000 routes), the per-route work in a thread
            view = self.speaker.state_view() if self.speaker is not None else None
            rows, counts = await asyncio.to_thread(_rows, self._row_builder, plan, view)
            self._rows = (plan, version, rows, counts)
        now = time.time()
        peers = () if self.speaker is None else self.speaker.peers()
        metrics = _metrics(counts, peers)
        if self.speaker is not None:
            metrics += _exabgp_metrics(self.speaker.supervisor.starts)
        return FeatureStatus(
            sections={"bgp_peers": [p.as_dict(now) for p in peers], "routes": rows},
            metrics=metrics,
        )


SMALL_PLAN = 256  # items; larger contributions (LXD's) count as unchanged only when the same object


def _same_plans(plans: tuple[RoutePlan, ...], before: tuple[RoutePlan, ...]) -> bool:
    """Every contribution the same object as last time, or a small one equal to it: comparing a
    changed 50,000-route plan item by item would stall the event loop."""
    return (
        bool(plans)
        and len(plans) == len(before)
        and all(a is b or (_size(a) <= SMALL_PLAN and a == b) for a, b in zip(plans, before, strict=True))
    )


def _size(plan: RoutePlan) -> int:
    return len(plan.routes) + len(plan.refused) + len(plan.withheld)


def _rows(
    builder: RouteRows, plan: RoutePlan, view: SpeakerView | None
) -> tuple[list[dict[str, Any]], Counter[tuple[str, str]]]:
    rows = builder.build(plan, view.per_peer() if view is not None else None)
    counts = Counter((str(row["state"]), reason_class(str(row["state"]), row["reason"])) for row in rows)
    return rows, counts


def _metrics(counts: Counter[tuple[str, str]], peers: tuple[PeerStatus, ...]) -> tuple[Metric, ...]:
    metrics = [
        Metric("fabricd_routes", count, (("state", state), ("reason", reason)), "routes by state and reason")
        for (state, reason), count in sorted(counts.items())
    ]
    for peer in peers:
        labels = (("peer", peer.name), ("address", str(peer.address)))
        metrics += [
            Metric(
                "fabricd_bgp_session_up",
                1.0 if peer.state == "established" else 0.0,
                labels,
                "1 while the BGP session is established",
            ),
            Metric(
                "fabricd_bgp_session_state",
                {"idle": 0.0, "connect": 1.0, "established": 2.0}[peer.state],
                labels,
                "the session's state: 0 idle, 1 connect (OPEN exchange), 2 established",
            ),
            Metric(
                "fabricd_bgp_session_flaps_total",
                peer.flaps,
                labels,
                "times the established session went down",
                kind="counter",
            ),
            Metric(
                "fabricd_bgp_prefixes_sent",
                peer.prefixes_sent,
                labels,
                "routes ExaBGP acknowledged sending to the peer (0 while the session is down)",
            ),
        ]
    return tuple(metrics)


def _exabgp_metrics(starts: int) -> tuple[Metric, ...]:
    return (
        Metric("fabricd_exabgp_starts_total", starts, help="ExaBGP processes started", kind="counter"),
        Metric(
            "fabricd_exabgp_restarts_total",
            max(0, starts - 1),
            help="ExaBGP restarts after it exited or hung",
            kind="counter",
        ),
    )
