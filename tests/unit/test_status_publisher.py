"""The status snapshot: built after passes, a slow or broken feature part never freezes the rest."""

from __future__ import annotations

import asyncio

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import ReconcileLoop
from fabricd.agent.publisher import StatusPublisher
from fabricd.agent.status import HostStatus

HOST = HostStatus("h1", "10.99.1.11", "0", 1, 0.0)


class Counting(Feature):
    name = "counting"

    def __init__(self) -> None:
        self.builds = 0
        self.building = asyncio.Event()

    async def status(self) -> FeatureStatus:
        self.builds += 1
        self.building.set()
        await asyncio.sleep(0.05)
        return FeatureStatus(sections={"routes": [self.builds]}, problems=(f"build {self.builds}",))


class Hanging(Feature):
    name = "hanging"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.first = True

    async def status(self) -> FeatureStatus:
        if self.first:
            self.first = False
            return FeatureStatus(sections={"overlay": {"state": "up"}})
        await self.release.wait()  # nft hung
        return FeatureStatus(sections={"overlay": {"state": "later"}})


class Broken(Feature):
    name = "broken"

    async def status(self) -> FeatureStatus:
        raise RuntimeError("status bug")


def publisher(*features: Feature, timeout: float = 0.2) -> StatusPublisher:
    loop = ReconcileLoop([], [], [], interval=1)
    return StatusPublisher(HOST, features, loop, DecisionLog(), timeout=timeout)


def test_a_slow_part_keeps_its_last_value_and_says_so_while_the_rest_refreshes() -> None:
    async def main() -> None:
        counting, hanging = Counting(), Hanging()
        pub = publisher(counting, hanging, Broken())
        first = await pub.snapshot()
        assert first.sections["overlay"] == {"state": "up"} and first.sections["routes"] == [1]
        second = await pub.snapshot()
        assert second.sections["routes"] == [2]
        assert second.sections["overlay"] == {"state": "up"}  # the last good part
        assert "hanging status not refreshed: no answer within 0.2 s" in second.problems
        assert any("broken status not refreshed: RuntimeError: status bug" in p for p in second.problems)
        hanging.release.set()

    asyncio.run(main())


def test_requests_during_a_build_coalesce_into_one_more_build() -> None:
    async def main() -> None:
        counting = Counting()
        pub = publisher(counting)
        pub.request()
        await counting.building.wait()
        for _ in range(4):
            pub.request()
        while pub._task is not None and not pub._task.done():
            await asyncio.sleep(0.01)
        assert counting.builds == 2  # the first, then one for the four that came during it
        as_dict = pub.current.as_dict(10.0)
        assert as_dict["routes"] == [2] and as_dict["problems"] == ["build 2"]
        assert {"host", "bgp_peers", "overlay_peers", "authority", "overlay"} <= set(as_dict)

    asyncio.run(main())
