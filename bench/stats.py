"""Distributions and goals as the benchmark reports them: no thresholds decide anything here.

A round that timed out is an infinite sample (`TIMED_OUT`): it stays in `n`, and every figure it
reaches (a percentile, the max, the mean) is reported as null, which meets no goal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]
TIMED_OUT = math.inf


def quantile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on a sorted copy.

    An infinite sample at either rank makes the answer infinite."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    if low == high or math.isinf(ordered[low]):
        return ordered[low]
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _shown(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def distribution(samples: Sequence[float], unit: str = "s", digits: int = 4) -> Json:
    """n, timed_out, p50, p99, min, max, mean and the raw samples (in measurement order; a timed-out
    round is null there)."""
    if not samples:
        return {"n": 0, "timed_out": 0, "unit": unit}
    return {
        "n": len(samples),
        "timed_out": sum(1 for s in samples if math.isinf(s)),
        "unit": unit,
        "p50": _shown(quantile(samples, 0.5), digits),
        "p99": _shown(quantile(samples, 0.99), digits),
        "min": _shown(min(samples), digits),
        "max": _shown(max(samples), digits),
        "mean": _shown(sum(samples) / len(samples), digits),
        "samples": [_shown(s, digits) for s in samples],
    }


def check(value: float | None, limit: float) -> bool:
    """A figure against its goal; a figure that could not be measured (or timed out) does not meet it."""
    return value is not None and value <= limit


def check_at_least(value: float | None, limit: float) -> bool:
    """A figure that must reach `limit`; one that could not be measured does not."""
    return value is not None and value >= limit


def best_median_worst(samples: Sequence[float], unit: str = "s", digits: int = 4) -> Json:
    """A round-by-round figure as best / median / worst; a timed-out round stays in `n` and makes the
    worst (and a median that reaches it) null."""
    if not samples:
        return {"n": 0, "timed_out": 0, "unit": unit, "best": None, "median": None, "worst": None}
    return {
        "n": len(samples),
        "timed_out": sum(1 for s in samples if math.isinf(s)),
        "unit": unit,
        "best": _shown(min(samples), digits),
        "median": _shown(quantile(samples, 0.5), digits),
        "worst": _shown(max(samples), digits),
        "samples": [_shown(s, digits) for s in samples],
    }
