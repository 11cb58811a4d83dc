"""The overlay's part of `fabricctl status`: peers, flood list, known MACs, MTU, refusals."""

from __future__ import annotations

from typing import Any

from fabricd.config.model import FabricConfig
from fabricd.overlay.manager import AppliedOverlay, Underlay
from fabricd.overlay.model import OverlayPlan


def overlay_peer_rows(plan: OverlayPlan | None) -> list[dict[str, Any]]:
    if plan is None:
        return []
    flooded = {f.vtep for f in plan.flood}
    return [
        {
            "name": p.name,
            "address": None if p.address is None else str(p.address),
            "state": p.state,
            "flood": p.address in flooded and p.state == "up",
            "reason": p.reason,
        }
        for p in plan.peers
    ]


def overlay_section(
    config: FabricConfig,
    applied: AppliedOverlay,
    underlay: Underlay,
    firewall: dict[str, Any] | None,
) -> dict[str, Any]:
    overlay = config.overlay
    plan = applied.plan
    state = "up" if plan is not None and applied.error is None else "error" if applied.error else "pending"
    return {
        "state": state,
        "bridge": overlay.bridge,
        "vni": overlay.vni,
        "port": overlay.port,
        "mtu": None if plan is None else plan.mtu,
        "mtu_source": "overlay.mtu"
        if overlay.mtu is not None
        else f"underlay {underlay.name} {underlay.mtu}",
        "flood": [] if plan is None else [{"peer": f.peer, "vtep": str(f.vtep)} for f in plan.flood],
        "known_macs": 0 if plan is None else len(plan.macs),
        "macs": []
        if plan is None
        else [{"mac": m.mac, "vtep": str(m.vtep), "origin": m.origin} for m in plan.macs],
        "refused": [] if plan is None else [{"subject": r.subject, "reason": r.reason} for r in plan.refused],
        "owned_fdb_entries": applied.owned,
        "last_change": list(applied.changes.reasons),
        "applied_at": applied.applied_at,
        "error": applied.error,
        "firewall": firewall,
    }


def overlay_problems(applied: AppliedOverlay, underlay: Underlay, configured_mtu: bool) -> list[str]:
    problems = []
    if underlay.error is not None and not configured_mtu:
        problems.append(f"overlay not built: underlay unknown: {underlay.error}")
    if applied.error is not None:
        problems.append(f"overlay apply failed: {applied.error}")
    if applied.plan is not None:
        problems += [f"overlay {r.subject} refused: {r.reason}" for r in applied.plan.refused]
    return problems
