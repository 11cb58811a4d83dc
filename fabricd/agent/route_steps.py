"""The route feature as reconcile steps: LXD snapshot → route plan → BGP speaker."""

from __future__ import annotations

from collections.abc import Mapping

from fabricd.bgp.speaker import Speaker
from fabricd.lxd.observer import LXDObservation
from fabricd.routes.incremental import IncrementalPlanner
from fabricd.routes.model import RoutePlan

STEP = "routes"


class RoutePlanning:
    """Plans routes from the LXD observation; None until LXD was read once (nothing is known yet)."""

    name = STEP

    def __init__(self, planner: IncrementalPlanner) -> None:
        self._planner = planner

    def plan(self, observed: Mapping[str, object]) -> RoutePlan | None:
        observation = observed.get("lxd")
        if not isinstance(observation, LXDObservation) or observation.snapshot is None:
            return None
        # While LXD is away the observer keeps its last snapshot, so this plan (and the
        # announcements) stay as they were instead of flapping.
        return self._planner.update(observation.snapshot)


class RouteAnnouncing:
    """Hands the speaker the whole desired set; the speaker sends only the difference."""

    name = STEP

    def __init__(self, speaker: Speaker | None) -> None:
        self._speaker = speaker
        self.plan = RoutePlan()

    async def apply(self, desired: object) -> RoutePlan:
        if isinstance(desired, RoutePlan):
            self.plan = desired
            if self._speaker is not None:
                await self._speaker.set_routes(desired.routes)
        return self.plan
