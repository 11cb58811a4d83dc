"""The health runner on a fake clock: checks start `interval` apart, results go through the state
machine, and the loop is asked for a pass only when what is shown or served changes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from ipaddress import ip_address

from fabricd.config.model import FlapConfig, HealthCheckConfig
from fabricd.routes.model import IPAddress
from fabricd.services.health import CheckResult, Rules
from fabricd.services.model import BackendId
from fabricd.services.runner import CheckSpec, HealthRunner

WEB1 = BackendId("web", "default", "web1")
WEB2 = BackendId("web", "default", "web2")
TARGET = ip_address("10.210.1.11")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedChecker:
    """Passes or fails as scripted per backend ("+" pass, "-" fail; the last mark repeats); each
    check takes `duration` on the fake clock."""

    def __init__(self, clock: FakeClock, scripts: dict[BackendId, str], duration: float = 0.1) -> None:
        self.clock = clock
        self.marks: dict[BackendId, Iterator[str]] = {b: self._marks(s) for b, s in scripts.items()}
        self.duration = duration
        self.started: list[tuple[BackendId, float]] = []

    @staticmethod
    def _marks(script: str) -> Iterator[str]:
        yield from script
        while True:
            yield script[-1]

    async def check(
        self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None
    ) -> CheckResult:
        self.started.append((backend, self.clock.now))
        self.clock.now += self.duration
        await asyncio.sleep(0)
        ok = next(self.marks[backend]) == "+"
        return CheckResult(ok, "connected" if ok else "connection refused", self.clock.now)


def spec(interval: float = 1.0, rise: int = 2, fall: int = 2) -> CheckSpec:
    check = HealthCheckConfig(
        "tcp", port=80, interval=interval, timeout=min(0.5, interval), rise=rise, fall=fall
    )
    return CheckSpec(check, TARGET, Rules(rise, fall, FlapConfig(hold_down=0.0)))


async def until(condition: object, limit: int = 10_000) -> None:
    for _ in range(limit):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def test_checks_start_interval_apart_and_only_changes_ask_for_a_pass() -> None:
    async def main() -> None:
        clock = FakeClock()
        checker = ScriptedChecker(clock, {WEB1: "+++--+"})
        passes: list[float] = []
        runner = HealthRunner(checker, lambda: passes.append(clock.now), clock=clock, sleep=clock.sleep)
        runner.set_checks({WEB1: spec(interval=1.0)})
        await until(lambda: len(checker.started) >= 8)
        await runner.stop()
        starts = [round(t, 6) for _, t in checker.started[:8]]
        assert starts == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # start to start, whatever a check takes
        # rising (1 of 2) -> up at the 2nd check; falling at the 4th; down at the 5th; one pass at
        # the 6th (rising, 1 of 2) and up again at the 7th.
        assert [round(t, 6) for t in passes] == [1.1, 3.1, 4.1, 5.1, 6.1]
        assert runner.changes == 3  # up, down, up: the serving flips
        assert runner.results[(WEB1, True)] >= 5 and runner.results[(WEB1, False)] == 2

    asyncio.run(main())


def test_set_checks_starts_new_stops_gone_and_restarts_changed_keeping_health() -> None:
    async def main() -> None:
        clock = FakeClock()
        checker = ScriptedChecker(clock, {WEB1: "+", WEB2: "-"})
        runner = HealthRunner(checker, lambda: None, clock=clock, sleep=clock.sleep)
        runner.set_checks({WEB1: spec(), WEB2: spec()})
        await until(lambda: runner.health()[WEB1].state == "up" and runner.health()[WEB2].state == "down")
        runner.set_checks({WEB1: spec(interval=2.0)})  # web2 gone, web1's check changed
        assert set(runner.health()) == {WEB1}
        assert runner.health()[WEB1].state == "up"  # kept across the restart of its task
        before = len([b for b, _ in checker.started if b == WEB2])
        seen = len(checker.started)
        await until(lambda: len(checker.started) >= seen + 3)
        assert len([b for b, _ in checker.started if b == WEB2]) == before  # no more checks of web2
        web1 = [t for b, t in checker.started if b == WEB1][-3:]
        assert [round(b - a, 6) for a, b in itertools.pairwise(web1)] == [2.0, 2.0]
        await runner.stop()
        assert runner._tasks == {}

    asyncio.run(main())


def test_drained_services_show_drained_and_checks_go_on_underneath() -> None:
    async def main() -> None:
        clock = FakeClock()
        checker = ScriptedChecker(clock, {WEB1: "+"})
        passes: list[float] = []
        runner = HealthRunner(checker, lambda: passes.append(clock.now), clock=clock, sleep=clock.sleep)
        runner.set_drained(lambda service: service == "web")
        runner.set_checks({WEB1: spec(rise=1)})
        await until(lambda: runner.health()[WEB1].last is not None)
        health = runner.health()[WEB1]
        assert (health.state, health.healthy, health.serving) == ("drained", True, False)
        runner.set_drained(lambda service: False)
        assert runner.health()[WEB1].state == "up" and runner.health()[WEB1].serving
        await runner.stop()

    asyncio.run(main())


class RaisingChecker:
    async def check(
        self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None
    ) -> CheckResult:
        await asyncio.sleep(0)
        raise RuntimeError("boom")


def test_a_checker_that_raises_counts_as_a_failed_check_and_the_task_goes_on() -> None:
    async def main() -> None:
        clock = FakeClock()
        heard: list[tuple[BackendId, bool, str]] = []
        runner = HealthRunner(
            RaisingChecker(),
            lambda: None,
            clock=clock,
            sleep=clock.sleep,
            on_serving=lambda b, change, health: heard.append((b, change.serving, health.state)),
        )
        runner.set_checks({WEB1: spec(rise=1, fall=1)})
        await until(lambda: runner.results[(WEB1, False)] >= 3)
        health = runner.health()[WEB1]
        assert health.state == "down" and health.reason == "check failed: RuntimeError: boom"
        assert heard == []  # never served, so never stopped serving
        await runner.stop()

    asyncio.run(main())


def test_every_serving_change_is_heard_once() -> None:
    async def main() -> None:
        clock = FakeClock()
        checker = ScriptedChecker(clock, {WEB1: "++--++"})
        heard: list[tuple[bool, str]] = []
        runner = HealthRunner(
            checker,
            lambda: None,
            clock=clock,
            sleep=clock.sleep,
            on_serving=lambda b, change, health: heard.append((change.serving, health.state)),
        )
        runner.set_checks({WEB1: spec()})
        await until(lambda: len(checker.started) >= 7)
        await runner.stop()
        assert heard == [(True, "up"), (False, "down"), (True, "up")]

    asyncio.run(main())
