"""The overlay as a feature: underlay MTU + LXD snapshot (+ cluster members) → overlay plan →
kernel and firewall, and its part of the status."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.agent.status import Metric
from fabricd.authority.macs import server_mac
from fabricd.authority.state import AUTHORITY
from fabricd.config.model import FabricConfig
from fabricd.config.reload import ConfigChange
from fabricd.lxd.members import MEMBERS
from fabricd.lxd.observer import LXD
from fabricd.overlay.manager import AppliedOverlay, OverlayManager, Underlay
from fabricd.overlay.model import OverlayPlan
from fabricd.overlay.planner import plan_overlay
from fabricd.overlay.status import overlay_peer_rows, overlay_problems, overlay_section

UNDERLAY: Key[Underlay] = Key("underlay")
FIREWALL_READ_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class OverlayIntent:
    plan: OverlayPlan
    underlay: Underlay
    # What of our FDB entries to keep although the plan lacks them: before LXD was read, MAC
    # locations ("macs") or, with peers from the cluster, everything ("all") is unknown.
    keep: Literal["nothing", "macs", "all"] = "nothing"


OVERLAY: Key[OverlayIntent] = Key("overlay")


class UnderlayObserver:
    """Reads the underlay interface and its MTU each pass (the overlay MTU follows it)."""

    key = UNDERLAY

    def __init__(self, manager: OverlayManager) -> None:
        self._manager = manager
        self.last = Underlay(None, None, None, "not read yet")

    async def observe(self) -> Underlay:
        self.last = await asyncio.to_thread(self._manager.read_underlay)
        return self.last


class OverlayPlanning:
    """Plans the overlay; nothing (leave the kernel as it is) until there is something to go on.

    Without an underlay MTU (and no overlay.mtu) nothing can be built. Before LXD was read once,
    the devices are still built (instances on the bridge cannot start without it) but the FDB
    entries already there are kept: an agent restart must not empty the flood list for the second
    it takes to connect. LXD unreachable later is fine: the observer holds its last snapshot.
    Cluster members come from their own poller when it runs (fresher than the last resync).
    """

    key = OVERLAY
    inputs = (UNDERLAY,)

    def __init__(self, config: FabricConfig) -> None:
        self.config = config

    def plan(self, observed: Observations) -> OverlayIntent | None:
        underlay = observed.get(UNDERLAY)
        if underlay is None:
            return None
        mtu = underlay.mtu
        if mtu is None:
            if self.config.overlay.mtu is None:
                return None
            mtu = 0  # unused: overlay.mtu wins
        lxd = observed.get(LXD)
        snapshot = lxd.snapshot if lxd is not None else None
        members = observed.get(MEMBERS)
        if snapshot is not None and members is not None and members.members is not None:
            snapshot = dataclasses.replace(snapshot, members=members.members)
        plan = plan_overlay(self.config, snapshot, mtu, self._authority(observed))
        if snapshot is not None:
            return OverlayIntent(plan, underlay)
        return OverlayIntent(plan, underlay, "all" if self.config.overlay.peers_from_lxd_cluster else "macs")

    def _authority(self, observed: Observations) -> tuple[str, str] | None:
        """(server MAC, serving peer) while another host serves DHCP/DNS, so frames to the server
        go straight to it; none while this host serves (the bridge knows its own port)."""
        state = observed.get(AUTHORITY)
        holder = state.known_holder if state is not None else None
        if holder is None or holder == self.config.host.name:
            return None
        return server_mac(self.config.overlay.vni), holder


class OverlayApplying:
    """Applies the plan when it changed, and re-checks the kernel every `recheck` seconds anyway
    (level-triggered: someone deleting an FDB entry is repaired at the next check)."""

    name = "overlay"
    inputs = (OVERLAY,)

    def __init__(self, manager: OverlayManager, recheck: float) -> None:
        self._manager = manager
        self._recheck = recheck
        self.applied = AppliedOverlay()
        self._last: OverlayIntent | None = None
        self._checked_at = 0.0

    async def apply(self, desired: Observations) -> AppliedOverlay:
        intent = desired.get(OVERLAY)
        if intent is None:
            return self.applied
        fresh = time.monotonic() - self._checked_at < self._recheck
        if fresh and intent == self._last and self.applied.error is None:
            return self.applied
        self._last = intent
        self.applied = await asyncio.to_thread(self._manager.apply, intent.plan, intent.underlay, intent.keep)
        self._checked_at = time.monotonic()
        return self.applied


class OverlayFeature(Feature):
    name = "overlay"

    def __init__(self, config: FabricConfig, state_dir: Path) -> None:
        self.config = config
        self.manager = OverlayManager(config, state_dir)
        self.underlay = UnderlayObserver(self.manager)
        self.applying = OverlayApplying(self.manager, recheck=config.reconcile.interval)
        self.observers = (self.underlay,)
        self.planning = OverlayPlanning(config)
        self.planners = (self.planning,)
        self.appliers = (self.applying,)
        self._firewall: dict[str, Any] | None = None
        self._firewall_read: asyncio.Future[dict[str, Any]] | None = None

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        # Only overlay.peers can differ here (the bridge, VNI and port need a restart); the next
        # pass plans the flood list from the new peers and the applier changes just that.
        self.config = self.manager.config = self.planning.config = config

    async def stop(self) -> None:
        # The overlay stays up so instances keep talking; only the VXLAN filter goes.
        await asyncio.to_thread(self.manager.stop)

    async def _firewall_status(self) -> dict[str, Any] | None:
        """The filter's counters come from `nft`: one read at a time, in a worker thread. While a
        read is slow (nft hung) the last counters are shown, marked stale, and no second read
        piles up behind it."""
        read = self._firewall_read
        if read is None or read.done():
            read = self._firewall_read = asyncio.ensure_future(
                asyncio.to_thread(self.manager.firewall_status)
            )
        try:
            self._firewall = await asyncio.wait_for(asyncio.shield(read), timeout=FIREWALL_READ_WAIT)
        except TimeoutError:
            stale = dict(self._firewall or {"peers": [], "counters": {}})
            stale["error"] = (
                f"nft did not answer within {FIREWALL_READ_WAIT:g} s; counters are from an earlier read"
            )
            return stale
        return self._firewall

    async def status(self) -> FeatureStatus:
        applied, underlay = self.applying.applied, self.underlay.last
        firewall = await self._firewall_status()
        section = overlay_section(self.config, applied, underlay, firewall)
        problems = overlay_problems(applied, underlay, self.config.overlay.mtu is not None)
        plan = applied.plan
        rows = overlay_peer_rows(plan)
        by_state = Counter(str(row["state"]) for row in rows)
        metrics = (
            Metric(
                "fabricd_overlay_peers_flooded",
                len(plan.flood) if plan else 0,
                help="peers in the flood list",
            ),
            Metric("fabricd_overlay_fdb_entries", applied.owned, help="FDB entries fabricd installed"),
            *(
                Metric("fabricd_overlay_peers", count, (("state", state),), "overlay peers by state")
                for state, count in sorted(by_state.items())
            ),
        )
        return FeatureStatus(
            sections={"overlay": section, "overlay_peers": rows},
            problems=tuple(problems),
            metrics=metrics,
        )
