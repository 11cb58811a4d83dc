"""The per-backend health state machine: rise/fall, drain and flap control (hold-down)."""

from __future__ import annotations

from hypothesis import example, given, settings
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

NO_FLAP = FlapConfig(hold_down=0.0)
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


def test_more_than_limit_falls_in_the_window_hold_the_backend_down() -> None:
    rules = Rules(rise=1, fall=1, flap=FlapConfig(limit=2, window=10.0, hold_down=30.0))
    health, changes, t = run(start(0), "+-+-", rules)  # falls at 2 and 4: two, not more than the limit
    assert health.held_until is None and len(changes) == 4
    health, changes, t = run(health, "+-", rules, t)  # the third fall, at 6, within 10 s of the first
    assert (health.held_until, health.state, len(changes)) == (36.0, "down", 2)
    assert health.reason == "refused; flapping: 3 falls within 10 s, held down 30 s"
    held, changes, t = run(health, "+" * 29, rules, t)  # passes at 7..35: all held
    assert (held.state, changes) == ("rising", [])
    assert held.reason == "held down for 1.0 s more: flapping (more than 2 falls within 10 s)"
    up, changes, t = run(held, "+", rules, t)  # 36: the hold is over
    assert (up.state, changes) == ("up", [Change(True, "ok")])
    # the old falls have left the window: the next fall does not hold it again
    down, changes, _ = run(up, "-+", rules, t)
    assert (down.state, down.held_until, len(changes)) == ("up", 36.0, 2)


def test_falls_spread_wider_than_the_window_are_never_held() -> None:
    rules = Rules(rise=1, fall=1, flap=FlapConfig(limit=1, window=5.0, hold_down=100.0))
    health, changes, _ = run(start(0), "+-" * 20, rules, step=3.0)  # a fall every 6 s
    assert health.held_until is None
    assert [c.serving for c in changes] == [True, False] * 20


def test_limit_zero_holds_down_after_every_fall() -> None:
    rules = Rules(rise=2, fall=1, flap=FlapConfig(limit=0, window=1.0, hold_down=10.0))
    up, _, t = run(start(0), "++", rules)
    down, _, t = run(up, "-", rules, t)  # down at 3
    held, changes, t = run(down, "++++++", rules, t)  # 4..9, within 10 s
    assert (held.state, changes) == ("rising", [])
    assert "held down for 4.0 s more" in held.reason
    health, changes, _ = run(held, "++++", rules, t)  # 10..13
    assert health.state == "up" and len(changes) == 1


def test_a_single_failure_and_recovery_is_not_held() -> None:
    rules = Rules(rise=2, fall=2, flap=FlapConfig())
    health, changes, _ = run(start(0), "++--++", rules)
    assert health.state == "up"
    assert [c.serving for c in changes] == [True, False, True]


# --- properties ---------------------------------------------------------------------------------

flaps = st.builds(
    FlapConfig,
    limit=st.integers(0, 4),
    window=st.sampled_from([1.0, 5.0, 30.0, 120.0]),
    hold_down=st.sampled_from([0.0, 2.0, 7.5, 60.0]),
)
rules = st.builds(Rules, rise=st.integers(1, 4), fall=st.integers(1, 4), flap=flaps)


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


@settings(max_examples=400, deadline=None)
@given(rules, events())
def test_every_step_obeys_rise_fall_and_flap_control(
    rules: Rules, events: list[tuple[object, float]]
) -> None:
    """Checked against an oracle written from the definition: every fall (healthy to down) is
    remembered; a fall with more than `limit` falls in the `window` up to it holds the backend
    down for `hold_down` from then."""
    flap = rules.flap
    health, t = start(0.0), 0.0
    results: list[bool] = []  # check results so far, oldest first
    falls: list[float] = []
    hold_ends: float | None = None
    for what, gap in events:
        t += gap
        before = health
        if what in ("drain", "undrain"):
            step = drain(health, t) if what == "drain" else undrain(health, t)
        else:
            results.append(bool(what))
            step = record(health, CheckResult(bool(what), "r", t), rules, t)
        health = step.health
        # a change exactly when serving flips, it says which way, and never without a state change
        assert (step.change is not None) == (before.serving != health.serving)
        if step.change is not None:
            assert step.change.serving == health.serving and health.state != before.state
        if what in ("drain", "undrain"):
            assert health.healthy == before.healthy and health.drained == (what == "drain")
            continue
        if health.healthy and not before.healthy:  # came up: rise passes in a row, not held
            assert len(results) >= rules.rise and all(results[-rules.rise :])
            assert hold_ends is None or t >= hold_ends
        if before.healthy and not health.healthy:  # went down: fall failures in a row
            assert len(results) >= rules.fall and not any(results[-rules.fall :])
            falls.append(t)
            if flap.hold_down > 0 and sum(t - flap.window < f <= t for f in falls) > flap.limit:
                hold_ends = t + flap.hold_down
        assert health.held_until == hold_ends
        # liveness: rise passes in a row bring it up unless it is held
        if (
            len(results) >= rules.rise
            and all(results[-rules.rise :])
            and (hold_ends is None or t >= hold_ends)
        ):
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


@settings(max_examples=300, deadline=None)
@example(limit=0, hold_down=5.0, rise=3, fall=1, interval=2.0, cycles=2)  # the hold ends before 3 passes
@given(
    st.integers(0, 4),
    st.sampled_from([5.0, 20.0, 60.0]),
    st.integers(1, 3),
    st.integers(1, 3),
    st.floats(0.1, 2.0),
    st.integers(1, 300),
)
def test_a_flapping_backend_comes_up_a_bounded_number_of_times(
    limit: int, hold_down: float, rise: int, fall: int, interval: float, cycles: int
) -> None:
    """A backend that passes `rise` and fails `fall` checks over and over, fast enough for
    `limit + 1` falls to fit in the window: between two hold-downs it comes up at most
    `limit + 1` times, and each hold-down keeps it out for `hold_down` seconds."""
    period = (rise + fall) * interval
    flap = FlapConfig(limit=limit, window=(limit + 1) * period * 1.01, hold_down=hold_down)
    rules = Rules(rise, fall, flap)
    health, ups, t = start(0.0), 0, 0.0
    for _ in range(cycles):
        health, changes, t = run(health, "+" * rise + "-" * fall, rules, t, interval)
        ups += sum(c.serving for c in changes)
    holds = t / hold_down + 1  # hold-downs never overlap: a held backend cannot fall
    assert ups <= (limit + 1) * (holds + 1)
    if cycles > limit + 1 and hold_down > rise * interval:
        assert ups < cycles  # a hold outlasting `rise` checks cost the backend at least one cycle
