"""The overlay as reconcile steps: underlay MTU + LXD snapshot → overlay plan → kernel and firewall."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fabricd.config.model import FabricConfig
from fabricd.lxd.observer import LXDObservation
from fabricd.overlay.manager import AppliedOverlay, OverlayManager, Underlay
from fabricd.overlay.model import OverlayPlan
from fabricd.overlay.planner import plan_overlay

STEP = "overlay"
UNDERLAY = "underlay"


class UnderlayObserver:
    """Reads the underlay interface and its MTU each pass (the overlay MTU follows it)."""

    name = UNDERLAY

    def __init__(self, manager: OverlayManager) -> None:
        self._manager = manager
        self.last = Underlay(None, None, None, "not read yet")

    async def observe(self) -> Underlay:
        self.last = await asyncio.to_thread(self._manager.read_underlay)
        return self.last


@dataclass(frozen=True, slots=True)
class OverlayIntent:
    plan: OverlayPlan
    underlay: Underlay
    # What of our FDB entries to keep although the plan lacks them: before LXD was read, MAC
    # locations ("macs") or, with peers from the cluster, everything ("all") is unknown.
    keep: Literal["nothing", "macs", "all"] = "nothing"


class OverlayPlanning:
    """Plans the overlay; None (leave the kernel as it is) until there is something to go on.

    Without an underlay MTU (and no overlay.mtu) nothing can be built. Before LXD was read once,
    the devices are still built (instances on the bridge cannot start without it) but the FDB
    entries already there are kept: an agent restart must not empty the flood list for the second
    it takes to connect. LXD unreachable later is fine: the observer holds its last snapshot.
    """

    name = STEP

    def __init__(self, config: FabricConfig) -> None:
        self._config = config

    def plan(self, observed: Mapping[str, object]) -> OverlayIntent | None:
        underlay = observed.get(UNDERLAY)
        if not isinstance(underlay, Underlay):
            return None
        mtu = underlay.mtu
        if mtu is None:
            if self._config.overlay.mtu is None:
                return None
            mtu = 0  # unused: overlay.mtu wins
        lxd = observed.get("lxd")
        snapshot = lxd.snapshot if isinstance(lxd, LXDObservation) else None
        plan = plan_overlay(self._config, snapshot, mtu)
        if snapshot is not None:
            return OverlayIntent(plan, underlay)
        return OverlayIntent(plan, underlay, "all" if self._config.overlay.peers_from_lxd_cluster else "macs")


class OverlayApplying:
    """Applies the plan when it changed, and re-checks the kernel every `recheck` seconds anyway
    (level-triggered: someone deleting an FDB entry is repaired at the next check)."""

    name = STEP

    def __init__(self, manager: OverlayManager, recheck: float) -> None:
        self._manager = manager
        self._recheck = recheck
        self.applied = AppliedOverlay()
        self._last: OverlayIntent | None = None
        self._checked_at = 0.0

    async def apply(self, desired: object) -> AppliedOverlay:
        if not isinstance(desired, OverlayIntent):
            return self.applied
        fresh = time.monotonic() - self._checked_at < self._recheck
        if fresh and desired == self._last and self.applied.error is None:
            return self.applied
        self._last = desired
        self.applied = await asyncio.to_thread(
            self._manager.apply, desired.plan, desired.underlay, desired.keep
        )
        self._checked_at = time.monotonic()
        return self.applied
