"""Distributions and goals as the benchmark reports them: no thresholds decide anything here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]


def quantile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on a sorted copy."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(samples: Sequence[float], unit: str = "s", digits: int = 4) -> Json:
    """n, p50, p99, min, max, mean and the raw samples (in measurement order)."""
    if not samples:
        return {"n": 0, "unit": unit}
    return {
        "n": len(samples),
        "unit": unit,
        "p50": round(quantile(samples, 0.5), digits),
        "p99": round(quantile(samples, 0.99), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "mean": round(sum(samples) / len(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


def check(value: float | None, limit: float) -> bool:
    """A figure against its goal; a figure that could not be measured does not meet it."""
    return value is not None and value <= limit
