"""The reconcile loop: typed keys, several planners feeding one applier, a failing step isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from fabricd.agent.loop import Key, Observations, ReconcileLoop

NUMBERS: Key[int] = Key("numbers")
WORDS: Key[str] = Key("words")
TOTAL: Key[int] = Key("total")
SPELLED: Key[str] = Key("spelled")


class Source:
    def __init__(self, key: Key[Any], value: object, fail: int = 0) -> None:
        self.key, self.value, self.fail, self.calls = key, value, fail, 0

    async def observe(self) -> object:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError(f"{self.key.name} read failed")
        return self.value


class Plan:
    def __init__(self, key: Key[Any], inputs: Sequence[Key[Any]], func: Any) -> None:
        self.key, self.inputs, self.func = key, tuple(inputs), func

    def plan(self, observed: Observations) -> object:
        return self.func(observed)


class Sink:
    def __init__(self, name: str, inputs: Sequence[Key[Any]], fail: bool = False) -> None:
        self.name, self.inputs, self.fail = name, tuple(inputs), fail
        self.seen: list[tuple[Any, ...]] = []

    async def apply(self, desired: Observations) -> object:
        if self.fail:
            raise ValueError("kernel said no")
        self.seen.append(tuple(v for k in self.inputs for v in desired.all(k)))
        return None


def run(loop: ReconcileLoop) -> Observations:
    return asyncio.run(loop.run_pass())


def test_several_planners_feed_one_applier_in_registration_order() -> None:
    sink = Sink("total", [TOTAL])
    loop = ReconcileLoop(
        [Source(NUMBERS, 3)],
        [
            Plan(TOTAL, [NUMBERS], lambda o: o.get(NUMBERS) * 10),
            Plan(TOTAL, [NUMBERS], lambda o: o.get(NUMBERS) + 1),
        ],
        [sink],
        interval=1,
    )
    seen = run(loop)
    assert sink.seen == [(30, 4)]
    assert seen.all(TOTAL) == (30, 4)
    with pytest.raises(LookupError, match="2 contributions"):
        seen.get(TOTAL)


def test_a_failing_applier_fails_only_itself_and_backs_off() -> None:
    broken, healthy = Sink("broken", [TOTAL], fail=True), Sink("healthy", [SPELLED])
    loop = ReconcileLoop(
        [Source(NUMBERS, 2), Source(WORDS, "two")],
        [Plan(TOTAL, [NUMBERS], lambda o: o.get(NUMBERS)), Plan(SPELLED, [WORDS], lambda o: o.get(WORDS))],
        [broken, healthy],
        interval=1,
        backoff_initial=60,
    )
    run(loop)
    run(loop)
    assert healthy.seen == [("two",), ("two",)]
    (health,) = loop.health()
    assert (health.kind, health.name, health.failures) == ("applier", "broken", 1)  # backing off
    assert "ValueError: kernel said no" in health.summary()


def test_a_failing_observer_skips_only_its_dependents_until_it_recovers() -> None:
    numbers = Source(NUMBERS, 5, fail=1)
    total, spelled = Sink("total", [TOTAL]), Sink("spelled", [SPELLED])
    loop = ReconcileLoop(
        [numbers, Source(WORDS, "five")],
        [Plan(TOTAL, [NUMBERS], lambda o: o.get(NUMBERS)), Plan(SPELLED, [WORDS], lambda o: o.get(WORDS))],
        [total, spelled],
        interval=1,
        backoff_initial=0,
    )
    run(loop)
    assert total.seen == [] and spelled.seen == [("five",)]  # never applied from a missing plan
    assert [h.name for h in loop.health()] == ["numbers"]
    run(loop)
    assert total.seen == [(5,)] and loop.health() == ()


def test_a_raising_planner_keeps_its_applier_from_acting_on_nothing() -> None:
    def boom(observed: Observations) -> int:
        raise ZeroDivisionError("planner bug")

    total, spelled = Sink("total", [TOTAL]), Sink("spelled", [SPELLED])
    loop = ReconcileLoop(
        [Source(NUMBERS, 1), Source(WORDS, "one")],
        [Plan(TOTAL, [NUMBERS], boom), Plan(SPELLED, [WORDS], lambda o: o.get(WORDS))],
        [total, spelled],
        interval=1,
    )
    run(loop)
    assert total.seen == [] and spelled.seen == [("one",)]
    assert [(h.kind, h.name) for h in loop.health()] == [("planner", "total")]


def test_wiring_is_checked_up_front() -> None:
    with pytest.raises(ValueError, match="reads total, which no step produces"):
        ReconcileLoop([Source(NUMBERS, 1)], [], [Sink("total", [TOTAL])], interval=1)


def test_keys_are_compared_by_identity_not_name() -> None:
    other: Key[int] = Key("numbers")
    seen = Observations()
    seen.put(NUMBERS, 1)
    assert seen.get(other) is None and seen.get(NUMBERS) == 1


def test_run_counts_passes_and_reports_the_failing_step() -> None:
    async def main() -> ReconcileLoop:
        stop = asyncio.Event()
        loop = ReconcileLoop(
            [Source(NUMBERS, 1)],
            [],
            [Sink("broken", [NUMBERS], fail=True)],
            interval=0.01,
            after_pass=lambda: stop.set() if loop.stats.passes >= 3 else None,
            backoff_initial=0,
        )
        await asyncio.wait_for(loop.run(stop), 5)
        return loop

    loop = asyncio.run(main())
    assert loop.stats.passes == 3
    assert loop.stats.last_error is not None and "applier broken failing (3x)" in loop.stats.last_error
