"""Flap control: more than `limit` falls within `window` seconds hold a backend down for `hold_down`.

Pure arithmetic on fall times (monotonic seconds); the health state machine decides what a hold
means. Only falls count (healthy to down): a backend that never comes up cannot flap.
"""

from __future__ import annotations

from fabricd.config.model import FlapConfig


def falls_after(falls: tuple[float, ...], now: float, flap: FlapConfig) -> tuple[float, ...]:
    """The falls within the window that ends at `now`, a fall at `now` included; at most `limit + 1`
    are kept, since no more are ever needed to decide."""
    recent = tuple(t for t in falls if now - flap.window < t <= now)
    return (*recent, now)[-(flap.limit + 1) :]


def held_until(falls: tuple[float, ...], now: float, flap: FlapConfig) -> float | None:
    """When a backend that fell at `now` (with `falls` as `falls_after` keeps them) may come up
    again; None when the fall does not hold it."""
    if flap.hold_down <= 0 or len(falls) <= flap.limit:
        return None
    return now + flap.hold_down
