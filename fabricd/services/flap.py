"""Flap damping in miniature (after RFC 2439): a penalty per fall that halves every half-life.

Pure arithmetic on (penalty, time) pairs; the health state machine decides what a penalty means.
"""

from __future__ import annotations

import math

from fabricd.config.model import FlapConfig
from fabricd.config.sections.services import damping_ceiling

FALL_PENALTY = 1.0  # one fall to down; suppress and reuse are counted in falls


def decayed(penalty: float, since: float, now: float, flap: FlapConfig) -> float:
    """`penalty` as it stood at `since`, decayed to `now` (never grows; a clock going back keeps it)."""
    if penalty <= 0.0 or now <= since:
        return penalty
    return penalty * math.pow(0.5, (now - since) / flap.half_life)


def after_fall(penalty: float, flap: FlapConfig) -> float:
    """The penalty once a fall is added, capped so it decays to `reuse` within `max_suppress`."""
    return min(penalty + FALL_PENALTY, damping_ceiling(flap.reuse, flap.half_life, flap.max_suppress))


def seconds_until_reuse(penalty: float, flap: FlapConfig) -> float:
    """How long until `penalty` decays below `reuse` (0 when it already is)."""
    if penalty < flap.reuse:
        return 0.0
    return flap.half_life * math.log2(penalty / flap.reuse)
