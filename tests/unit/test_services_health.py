"""The per-backend health state machine: rise/fall, drain, hold-down and damping."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config.model import FlapConfig
from fabricd.services.health import (
    NOT_CHECKED,
    BackendHealth,
    Change,
    CheckResult,
    Rules,
    drain,
    record,
    start,
    undrain,
)

NO_FLAP = FlapConfig(hold_down=0.0, damping=False)
PLAIN = Rules(rise=2, fall=3, flap=NO_FLAP)


def run(health: BackendHealth, results: str, rules: Rules, t: float = 0.0, step: float = 1.0) -> tuple[
    BackendHealth, list[Change], float
]:  # fmt: skip
    """Feed results written as "+" (pass) and "-" (fail), one per `step` seconds from `t`."""
    changes = []
    for mark in results:
        t += step
        outcome = record(health, CheckResult(mark == "+", "ok" if mark == "+" else "refused", t), rules, t)
        health = outcome.health
        if outcome.change is not None:
            changes.append(outcome.change)
    return health, changes, t


def test_a_new_backend_is_rising_unchecked_and_not_serving() -> None:
    health = start(5.0)
    assert (health.state, health.reason, health.since) == ("rising", NOT_CHECKED, 5.0)
    assert not health.healthy and not health.serving and not health.checked


def test_rise_passes_bring_it_up_with_one_change() -> None:
    health, changes, _ = run(start(0), "+", PLAIN)
    assert (health.state, changes) == ("rising", [])
    assert health.reason == "1 of 2 passes: ok"
    health, changes, _ = run(health, "+", PLAIN, 1)
    assert health.state == "up" and health.serving
    assert changes == [Change(True, "ok")]


def test_failures_below_fall_keep_it_serving_without_a_change() -> None:
    up, _, t = run(start(0), "++", PLAIN)
    health, changes, t = run(up, "--", PLAIN, t)
    assert (health.state, health.serving, changes) == ("falling", True, [])
    assert health.reason == "2 of 3 failures: refused"
    back, changes, _ = run(health, "+", PLAIN, t)
    assert (back.state, changes) == ("up", [])
    down, changes, _ = run(health, "-", PLAIN, t)
    assert (down.state, down.serving) == ("down", False)
    assert changes == [Change(False, "refused")]
    assert down.last == CheckResult(False, "refused", t + 1)


def test_a_failure_while_rising_goes_down_and_starts_the_count_again() -> None:
    health, changes, t = run(start(0), "+-", PLAIN)
    assert (health.state, changes) == ("down", [])
    health, changes, _ = run(health, "+", PLAIN, t)
    assert (health.state, health.passes, changes) == ("rising", 1, [])


def test_rise_and_fall_of_one_skip_the_intermediate_states() -> None:
    rules = Rules(rise=1, fall=1, flap=NO_FLAP)
    health, changes, t = run(start(0), "+", rules)
    assert (health.state, len(changes)) == ("up", 1)
    health, changes, _ = run(health, "-", rules, t)
    assert (health.state, len(changes)) == ("down", 1)


def test_drain_hides_the_state_and_keeps_counting() -> None:
    up, _, t = run(start(0), "++", PLAIN)
    step = drain(up, t)
    assert step.change == Change(False, "drained")
    assert (step.health.state, step.health.healthy, step.health.since) == ("drained", True, t)
    assert drain(step.health, t).change is None  # draining twice changes nothing
    # checks go on underneath: undrained while healthy serves again at once
    health, changes, t = run(step.health, "-", PLAIN, t)
    assert (health.state, health.health, changes) == ("drained", "falling", [])
    assert undrain(health, t).change == Change(True, "undrained")
    # went down while drained: undraining changes nothing for the router
    health, changes, t = run(health, "--", PLAIN, t)
    assert (health.health, changes) == ("down", [])
    back = undrain(health, t)
    assert (back.health.state, back.change) == ("down", None)


def test_hold_down_keeps_a_fallen_backend_out() -> None:
    rules = Rules(rise=2, fall=1, flap=FlapConfig(hold_down=10.0, damping=False))
    up, _, t = run(start(0), "++", rules)
    down, _, t = run(up, "-", rules, t)  # down at t=3
    held, changes, t = run(down, "++++++", rules, t)  # passes at 4..9: all within 10 s
    assert (held.state, changes) == ("rising", [])
    assert "held down for 4.0 s more (flap.hold_down)" in held.reason
    health, changes, _ = run(held, "++++", rules, t)  # 10, 11, 12, 13
    assert health.state == "up"
    assert len(changes) == 1


def test_damping_suppresses_a_flapping_backend_until_the_penalty_decays() -> None:
    flap = FlapConfig(hold_down=0.0, damping=True, half_life=10.0, suppress=3.0, reuse=1.0, max_suppress=300)
    rules = Rules(rise=1, fall=1, flap=flap)
    health, changes, t = run(start(0), "+-+-+-", rules)  # falls at 2, 4 and 6: penalty 2.63 < 3
    assert len(changes) == 6 and not health.suppressed
    health, changes, t = run(health, "+-", rules, t)  # the fourth fall, at 8
    expected = ((1 * 0.5**0.2 + 1) * 0.5**0.2 + 1) * 0.5**0.2 + 1  # each fall adds 1, 2 s = 0.2 half-lives
    assert math.isclose(health.penalty, expected) and expected > 3
    assert health.suppressed and health.state == "down" and len(changes) == 2
    reusable_at = 8 + 10 * math.log2(expected)  # decayed to 1
    held, changes, t = run(health, "+" * 17, rules, t)  # 9..25
    assert t < reusable_at < t + 1
    assert (held.state, changes) == ("rising", [])
    assert held.reason.startswith("suppressed: flapping (penalty")
    later, changes, t = run(held, "+", rules, t)
    assert later.state == "up" and len(changes) == 1 and not later.suppressed


def test_a_single_failure_and_recovery_is_not_damped() -> None:
    rules = Rules(rise=2, fall=2, flap=FlapConfig())
    health, changes, _ = run(start(0), "++--++", rules)
    assert health.state == "up"
    assert [c.serving for c in changes] == [True, False, True]


# --- properties ---------------------------------------------------------------------------------

flaps = st.builds(
    FlapConfig,
    hold_down=st.sampled_from([0.0, 2.0, 7.5]),
    damping=st.booleans(),
    half_life=st.sampled_from([2.0, 30.0, 120.0]),
    suppress=st.sampled_from([2.0, 3.0]),
    reuse=st.sampled_from([0.5, 1.0]),
    max_suppress=st.sampled_from([30.0, 90.0, 300.0]),
).filter(lambda f: f.reuse * 2 ** (f.max_suppress / f.half_life) >= f.suppress)  # as the parser insists
rules = st.builds(Rules, rise=st.integers(1, 4), fall=st.integers(1, 4), flap=flaps)
# (pass?, seconds since the previous event), or a drain toggle


@st.composite
def events(draw: st.DrawFn) -> list[tuple[object, float]]:
    """Runs of equal results a few seconds apart (a flapping backend), long pauses, drain toggles:
    (True/False or "drain"/"undrain", seconds since the previous event)."""
    out: list[tuple[object, float]] = []
    ok = True
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["run", "run", "run", "pause", "drain"]))
        if kind == "run":
            ok = ok != draw(st.sampled_from([True, True, True, False]))  # mostly the other result
            out += [(ok, draw(st.floats(0.05, 1.5)))] * draw(st.integers(1, 6))
        elif kind == "pause":
            out.append((draw(st.booleans()), draw(st.floats(4.0, 400.0))))
        else:
            out.append((draw(st.sampled_from(["drain", "undrain"])), draw(st.floats(0.05, 5.0))))
    return out


@settings(max_examples=300, deadline=None)
@given(rules, events())
def test_every_step_obeys_rise_fall_and_flap_control(
    rules: Rules, events: list[tuple[object, float]]
) -> None:
    flap = rules.flap
    health, t = start(0.0), 0.0
    results: list[bool] = []  # check results so far, oldest first
    last_fall: float | None = None
    suppressed_at: tuple[float, float] | None = None  # when damping set in, and the penalty then
    for what, gap in events:
        t += gap
        before = health
        if what in ("drain", "undrain"):
            step = drain(health, t) if what == "drain" else undrain(health, t)
        else:
            results.append(bool(what))
            step = record(health, CheckResult(bool(what), "r", t), rules, t)
        health = step.health
        # a change exactly when serving flips, and it says which way
        assert (step.change is not None) == (before.serving != health.serving)
        if step.change is not None:
            assert step.change.serving == health.serving
        if what in ("drain", "undrain"):
            assert health.healthy == before.healthy and health.drained == (what == "drain")
            continue
        if health.healthy and not before.healthy:  # came up: rise passes in a row, holds over
            assert len(results) >= rules.rise and all(results[-rules.rise :])
            if last_fall is not None:
                assert t >= last_fall + flap.hold_down
            if suppressed_at is not None:
                at, penalty = suppressed_at
                assert penalty * math.pow(0.5, (t - at) / flap.half_life) <= flap.reuse * (1 + 1e-9)
            suppressed_at = None
        if before.healthy and not health.healthy:  # went down: fall failures in a row
            assert len(results) >= rules.fall and not any(results[-rules.fall :])
            last_fall = t
            if health.suppressed:
                suppressed_at = (t, health.penalty)
        if before.healthy and health.healthy is False:
            assert health.down_at == t
        # liveness: rise passes in a row long after the last fall always bring it up
        quiet = last_fall is None or t >= last_fall + max(flap.hold_down, flap.max_suppress) + 1e-6
        if len(results) >= rules.rise and all(results[-rules.rise :]) and quiet:
            assert health.healthy
        # and fall failures in a row always take it down
        if len(results) >= rules.fall and not any(results[-rules.fall :]):
            assert not health.healthy


@settings(max_examples=200, deadline=None)
@given(rules, st.lists(st.booleans(), max_size=60))
def test_without_flap_control_health_is_the_streak_of_results(rules: Rules, results: list[bool]) -> None:
    """An oracle written from the definition: up after `rise` passes in a row, down after `fall`
    failures in a row, otherwise whatever it was."""
    plain = Rules(rules.rise, rules.fall, NO_FLAP)
    health, healthy = start(0.0), False
    for n, ok in enumerate(results, 1):
        health = record(health, CheckResult(ok, "r", float(n)), plain, float(n)).health
        if n >= plain.rise and all(results[n - plain.rise : n]):
            healthy = True
        elif n >= plain.fall and not any(results[n - plain.fall : n]):
            healthy = False
        assert health.healthy == healthy, (n, results[:n])


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        FlapConfig,
        hold_down=st.just(0.0),
        damping=st.just(True),
        half_life=st.floats(50.0, 300.0),  # at least 4 flap periods: the penalty builds up
        suppress=st.floats(1.5, 6.0),
        reuse=st.floats(0.2, 1.0),
        max_suppress=st.just(3600.0),
    ),
    st.integers(1, 3),
    st.integers(1, 3),
    st.floats(0.1, 2.0),
    st.integers(20, 300),
)
def test_a_flapping_backend_comes_up_a_bounded_number_of_times(
    flap: FlapConfig, rise: int, fall: int, interval: float, cycles: int
) -> None:
    """A backend that passes `rise` and fails `fall` checks over and over, forever: each cycle
    of suppression lets it up at most about `suppress` times, and a cycle lasts at least the time
    the penalty needs to decay from `suppress` to `reuse`."""
    rules = Rules(rise, fall, flap)
    health, ups, t = start(0.0), 0, 0.0
    for _ in range(cycles):
        health, changes, t = run(health, "+" * rise + "-" * fall, rules, t, interval)
        ups += sum(c.serving for c in changes)
    cycle = flap.half_life * math.log2(flap.suppress / flap.reuse)
    per_cycle = math.ceil(flap.suppress) + 1
    assert ups <= per_cycle * (1 + t / cycle)
    assert ups < cycles  # damping did hold it out
