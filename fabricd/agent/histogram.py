"""A histogram as an immutable value: observing returns a new one, so a reader in another thread
(the metrics endpoint) always sees a whole, consistent set of buckets."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Seconds: a reconcile pass, an event's wait for its pass. Milliseconds to half a minute.
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class Histogram:
    bounds: tuple[float, ...] = SECONDS_BUCKETS  # upper bounds, ascending; +Inf is implied
    counts: tuple[int, ...] = ()  # per bucket, not cumulative; one more than bounds (+Inf)
    total: float = 0.0  # sum of every observed value

    def observe(self, value: float) -> Histogram:
        counts = list(self.counts or (0,) * (len(self.bounds) + 1))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        return Histogram(self.bounds, tuple(counts), self.total + value)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count)."""
        counts = self.counts or (0,) * (len(self.bounds) + 1)
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append((bound, running))
        return out
