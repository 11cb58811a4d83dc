"""The agent's state as fabricctl sees it: plain data, assembled once per reconcile pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HostStatus:
    name: str
    underlay_address: str
    version: str
    pid: int
    started_at: float  # unix time

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "underlay_address": self.underlay_address,
            "version": self.version,
            "pid": self.pid,
            "uptime_seconds": round(max(0.0, now - self.started_at), 3),
        }


@dataclass(frozen=True, slots=True)
class ReconcileStats:
    passes: int = 0
    last_pass_at: float | None = None
    last_pass_seconds: float | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "last_pass_at": self.last_pass_at,
            "last_pass_seconds": self.last_pass_seconds,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    host: HostStatus
    reconcile: ReconcileStats = ReconcileStats()
    bgp_peers: tuple[dict[str, Any], ...] = ()
    routes: tuple[dict[str, Any], ...] = ()
    overlay_peers: tuple[dict[str, Any], ...] = ()
    authority: dict[str, Any] | None = None
    overlay: dict[str, Any] | None = None
    problems: tuple[str, ...] = field(default=())

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "host": self.host.as_dict(now),
            "bgp_peers": list(self.bgp_peers),
            "routes": list(self.routes),
            "overlay_peers": list(self.overlay_peers),
            "authority": self.authority,
            "overlay": self.overlay,
            "reconcile": self.reconcile.as_dict(),
            "problems": list(self.problems),
        }
