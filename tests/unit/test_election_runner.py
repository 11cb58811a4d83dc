"""The running election: fencing happens on time even when the store hangs; a stop releases."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable

from fabricd.authority.election import ElectionTimers, Elector, LeaseRecord, StoreRead, Write
from fabricd.authority.runner import ElectionRunner

TIMERS = ElectionTimers(ttl=0.6, renew_interval=0.1, margin=0.2)


class HangingStore:
    """An in-memory record with ETags whose reads can be made to hang (LXD wedged)."""

    def __init__(self) -> None:
        self.text = ""
        self.flowing = threading.Event()
        self.flowing.set()

    def etag(self) -> str:  # as LXD: a hash of the content
        return hashlib.sha256(self.text.encode()).hexdigest()

    def read(self) -> StoreRead:
        self.flowing.wait()
        return StoreRead(LeaseRecord.decode(self.text), self.etag())

    def write(self, write: Write) -> bool:
        self.flowing.wait()
        if write.if_match != self.etag():
            return False
        self.text = write.record.encode()
        return True


def test_the_holder_fences_on_time_while_the_store_hangs_and_serves_again_after() -> None:
    async def main() -> None:
        store = HangingStore()
        fenced: list[float] = []

        async def on_fence() -> None:
            fenced.append(time.monotonic())

        runner = ElectionRunner(Elector("h1", TIMERS), store, lambda: None, on_fence)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        while not runner.state().serving:
            await asyncio.sleep(0.01)
        assert runner.state().holder == "h1" and runner.state().expires is not None
        store.flowing.clear()  # LXD hangs: no read or write returns
        hung_at = time.monotonic()
        while not fenced:
            await asyncio.sleep(0.005)
            assert time.monotonic() - hung_at < 2.0, "never fenced"
        assert not runner.state().serving
        assert fenced[0] - hung_at <= TIMERS.ttl - TIMERS.margin + 0.15  # from the last renewal
        store.flowing.set()
        while not runner.state().serving:  # the record still names h1: it renews and serves again
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 3)
        released = LeaseRecord.decode(store.text)
        assert released is not None and (released.holder, released.epoch) == ("", runner.memory.epoch)
        assert len(fenced) == 2  # the hang, and the clean stop

    asyncio.run(main())


def test_a_standby_takes_over_a_released_lease_at_its_next_poll() -> None:
    async def main() -> float:
        store = HangingStore()

        async def nothing() -> None:
            return None

        h1 = ElectionRunner(Elector("h1", TIMERS), store, lambda: None, nothing)
        h2 = ElectionRunner(Elector("h2", TIMERS), store, lambda: None, nothing)
        stop1, stop2 = asyncio.Event(), asyncio.Event()
        t1 = asyncio.create_task(h1.run(stop1))
        while not h1.state().serving:
            await asyncio.sleep(0.01)
        t2 = asyncio.create_task(h2.run(stop2))
        await asyncio.sleep(0.3)
        assert not h2.state().serving and h2.state().holder == "h1"
        stop1.set()
        await t1
        released = time.monotonic()
        while not h2.state().serving:
            await asyncio.sleep(0.005)
        took = time.monotonic() - released
        stop2.set()
        await t2
        return took

    assert asyncio.run(main()) <= TIMERS.renew_interval + 0.1


def test_a_standby_asks_for_a_pass_when_another_host_takes_over() -> None:
    async def main() -> None:
        store = HangingStore()

        async def nothing() -> None:
            return None

        passes: dict[str, list[str]] = {"h2": [], "h3": []}
        runners = {"h1": ElectionRunner(Elector("h1", TIMERS), store, lambda: None, nothing)}

        def recorder(name: str) -> Callable[[], None]:
            return lambda: passes[name].append(runners[name].state().holder)

        for name in passes:
            runners[name] = ElectionRunner(Elector(name, TIMERS), store, recorder(name), nothing)
        stops = {name: asyncio.Event() for name in runners}
        tasks = {"h1": asyncio.create_task(runners["h1"].run(stops["h1"]))}
        while not runners["h1"].state().serving:
            await asyncio.sleep(0.01)
        for name in passes:
            tasks[name] = asyncio.create_task(runners[name].run(stops[name]))
        while any(runners[n].state().holder != "h1" for n in passes):
            await asyncio.sleep(0.01)
        assert passes == {"h2": ["h1"], "h3": ["h1"]}  # first read: the overlay learns where it serves
        stops["h1"].set()
        await tasks["h1"]  # released: one of h2 and h3 takes over
        while not any(runners[n].state().serving for n in passes):
            await asyncio.sleep(0.01)
        new = next(n for n in passes if runners[n].state().serving)
        other = "h3" if new == "h2" else "h2"
        while runners[other].state().holder != new:
            await asyncio.sleep(0.01)
        assert passes[other][-1] == new  # the other standby asked for a pass on the change
        for name in passes:
            stops[name].set()
            await tasks[name]

    asyncio.run(main())
