"""One state machine per backend: its health from check results, with rise/fall and flap control.

    rising --pass x rise--> up --fail--> falling --fail x fall--> down --pass--> rising
      |  ^                  ^               |                      ^  |
      |  '----- held -------'---- pass -----'                      |  |
      '------------------------ fail ------------------------------'  '-- fail: stays down

A new backend starts `rising` with no result ("not checked yet"): it is not healthy, and it is not
`down` either, so `on_failure: degrade` does not announce a backend nobody has checked. `rise`
passes in a row make it `up`; from `up` one failure makes it `falling` (still healthy: routed and
announced) and `fall` failures in a row make it `down`. With `fall: 1` or `rise: 1` the
intermediate state is skipped.

Flap control holds a backend in `rising` even after `rise` passes: a backend that fell more than
`flap.limit` times within `flap.window` seconds stays out for `flap.hold_down` seconds after that
fall (see `fabricd.services.flap`). Going down is never delayed: withdrawing a dead backend fast is
the point.

`drained` is shown instead of the health state while the operator drains the backend's service;
checks go on underneath, so undraining returns to what the checks say at once.

Every step returns the new value and at most one `Change`: only a step that flips `serving`
(healthy and not drained) changes what is routed or announced, so a flapping check inside the
rise/fall window costs the router nothing. Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from fabricd.config.model import FlapConfig
from fabricd.services.flap import falls_after, held_until

HealthState = Literal["rising", "up", "falling", "down"]
BackendState = Literal["rising", "up", "falling", "down", "drained"]
NOT_CHECKED = "not checked yet"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome; `reason` says what was seen ("connected", "timed out after 0.5 s")."""

    ok: bool
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Rules:
    """What the checks of one service count to: rise, fall and flap control."""

    rise: int = 2
    fall: int = 2
    flap: FlapConfig = field(default_factory=FlapConfig)


@dataclass(frozen=True, slots=True)
class Change:
    """An announcement-relevant change: the backend starts or stops serving."""

    serving: bool
    reason: str


@dataclass(frozen=True, slots=True)
class BackendHealth:
    health: HealthState = "rising"
    reason: str = NOT_CHECKED
    since: float = 0.0  # when `state` last changed
    last: CheckResult | None = None
    passes: int = 0  # in a row, at most `rise`
    failures: int = 0  # in a row, at most `fall`
    falls: tuple[float, ...] = ()  # recent falls from healthy to down, for flap control
    held_until: float | None = None  # flap control: not up before this, whatever the checks say
    drained: bool = False

    @property
    def state(self) -> BackendState:
        return "drained" if self.drained else self.health

    @property
    def healthy(self) -> bool:
        """What the checks say, drain or not: the host route follows this."""
        return self.health in ("up", "falling")

    @property
    def serving(self) -> bool:
        return self.healthy and not self.drained

    @property
    def checked(self) -> bool:
        return self.last is not None


@dataclass(frozen=True, slots=True)
class Step:
    health: BackendHealth
    change: Change | None = None


def start(now: float) -> BackendHealth:
    return BackendHealth(since=now)


def record(health: BackendHealth, result: CheckResult, rules: Rules, now: float) -> Step:
    """The backend after one check result."""
    base = replace(health, last=result)
    new = _passed(base, result, rules, now) if result.ok else _failed(base, result, rules, now)
    return _step(health, new, now)


def _passed(h: BackendHealth, result: CheckResult, rules: Rules, now: float) -> BackendHealth:
    passes = min(h.passes + 1, rules.rise)
    h = replace(h, passes=passes, failures=0)
    if h.healthy:
        return replace(h, health="up", reason=result.reason)
    if passes < rules.rise:
        return replace(h, health="rising", reason=f"{passes} of {rules.rise} passes: {result.reason}")
    held = _held(h, rules.flap, now)
    if held:
        return replace(h, health="rising", reason=held)
    return replace(h, health="up", reason=result.reason)


def _held(h: BackendHealth, flap: FlapConfig, now: float) -> str:
    """Why a backend that passed `rise` checks may not come up yet; "" when it may."""
    if h.held_until is None or now >= h.held_until:
        return ""
    return (f"held down for {h.held_until - now:.1f} s more: flapping (more than {flap.limit} "
            f"falls within {flap.window:g} s)")  # fmt: skip


def _failed(h: BackendHealth, result: CheckResult, rules: Rules, now: float) -> BackendHealth:
    failures = min(h.failures + 1, rules.fall)
    h = replace(h, passes=0, failures=failures)
    if not h.healthy:
        return replace(h, health="down", reason=result.reason)
    if failures < rules.fall:
        return replace(h, health="falling", reason=f"{failures} of {rules.fall} failures: {result.reason}")
    falls = falls_after(h.falls, now, rules.flap)
    until = held_until(falls, now, rules.flap)
    if until is None:
        return replace(h, health="down", reason=result.reason, falls=falls)
    flapping = (
        f"flapping: {len(falls)} falls within {rules.flap.window:g} s, held down {rules.flap.hold_down:g} s"
    )
    return replace(h, health="down", reason=f"{result.reason}; {flapping}", falls=falls, held_until=until)


def drain(health: BackendHealth, now: float) -> Step:
    return _step(health, replace(health, drained=True), now, "drained")


def undrain(health: BackendHealth, now: float) -> Step:
    return _step(health, replace(health, drained=False), now, "undrained")


def _step(old: BackendHealth, new: BackendHealth, now: float, why: str = "") -> Step:
    if new.state != old.state:
        new = replace(new, since=now)
    if new.serving == old.serving:
        return Step(new)
    return Step(new, Change(new.serving, why or new.reason))
