"""Decisions as structured events: every route or peer state change, with its reason.

Each decision is logged with a stable `event_kind` key (route.announce, route.withdraw, route.refuse,
route.withhold, bgp.peer, config.reload) and kept in a bounded in-memory ring that `fabricctl
events` reads. A cold start or a resync can change thousands of routes at once: past
`per_batch_limit` changes of one kind in one batch, the rest are summed up in a single event
instead of one line each.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fabricd.log import get_logger

log = get_logger("fabricd.decisions")

RING_SIZE = 1000
PER_BATCH_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Decision:
    event: str  # stable key: route.announce, route.withdraw, route.refuse, route.withhold, bgp.peer, ...
    subject: str  # the prefix, or the peer
    reason: str
    at: float
    fields: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "subject": self.subject, "reason": self.reason, "at": self.at} | dict(
            self.fields
        )


class DecisionLog:
    def __init__(self, size: int = RING_SIZE, per_batch_limit: int = PER_BATCH_LIMIT) -> None:
        self._ring: deque[Decision] = deque(maxlen=size)
        self._limit = self.per_batch_limit = per_batch_limit
        self.recorded = 0  # every decision ever made, including summed-up ones

    def record(self, event: str, subject: str, reason: str, **fields: str) -> None:
        decision = Decision(event, subject, reason, time.time(), tuple(sorted(fields.items())))
        self._keep(decision)

    def record_batch(
        self, event: str, items: Iterable[tuple[str, str, Mapping[str, str]]], total: int
    ) -> None:
        """Many decisions of one kind: the first few (subject, reason, fields) one by one, and the
        rest of `total` as one summary event, so a cold start does not flood the log."""
        kept = 0
        for subject, reason, fields in items:
            if kept == self._limit:
                break
            kept += 1
            self._keep(Decision(event, subject, reason, time.time(), tuple(sorted(fields.items()))))
        more = total - kept
        if more > 0:
            summary = Decision(
                event, f"{more} more", f"{more} more {event} decisions in this batch", time.time()
            )
            self._keep(summary)
            self.recorded += more - 1  # the summary stands for `more` decisions

    def _keep(self, decision: Decision) -> None:
        self._ring.append(decision)
        self.recorded += 1
        log.info(
            decision.reason, event_kind=decision.event, subject=decision.subject, **dict(decision.fields)
        )

    def recent(self) -> tuple[dict[str, Any], ...]:
        """Oldest first."""
        return tuple(d.as_dict() for d in self._ring)
