"""The agent's state as fabricctl sees it: plain data, assembled once per reconcile pass.

A snapshot is built off the event loop after a pass and then only read: the control socket, the
metrics endpoint and the watchdog all answer from the last one, so no request does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fabricd.agent.histogram import Histogram

# Every status reply carries these keys, filled by whichever feature owns them.
EMPTY_SECTIONS: Mapping[str, Any] = {
    "bgp_peers": (),
    "bfd_sessions": (),
    "routes": (),
    "overlay_peers": (),
    "authority": None,
    "overlay": None,
}


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
class StepHealth:
    """A reconcile step that is failing, and why (it is retried with backoff)."""

    kind: str  # observer, planner, applier
    name: str
    failures: int
    last_error: str | None
    failed_at: float | None

    def summary(self) -> str:
        return f"{self.kind} {self.name} failing ({self.failures}x): {self.last_error}"


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
class Metric:
    """One sample for the metrics endpoint: a gauge or counter with its labels."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    help: str = ""
    kind: str = "gauge"  # or counter


@dataclass(frozen=True, slots=True)
class HistogramMetric:
    """A distribution for the metrics endpoint (durations, lags), with its labels."""

    name: str
    histogram: Histogram
    labels: tuple[tuple[str, str], ...] = ()
    help: str = ""


Sample = Metric | HistogramMetric


@dataclass(frozen=True, slots=True, weakref_slot=True)
class StatusSnapshot:
    host: HostStatus
    reconcile: ReconcileStats = ReconcileStats()
    sections: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    metrics: tuple[Sample, ...] = ()
    events: tuple[Mapping[str, Any], ...] = ()
    built_at: float | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        sections = {**EMPTY_SECTIONS, **self.sections}
        return {
            "host": self.host.as_dict(now),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in sections.items()},
            "reconcile": self.reconcile.as_dict(),
            "problems": list(self.problems),
            "status_built_at": self.built_at,
        }
