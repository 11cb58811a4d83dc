"""The running election: fencing happens on time even when the store hangs; a stop releases."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

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
    """The overlay's FDB entry for the server MAC follows the holder: a standby re-plans at once."""

    async def main() -> list[str]:
        store = HangingStore()
        record = LeaseRecord("h1", 1, TIMERS.ttl, 1)
        store.text = record.encode()

        async def renew_as_holder() -> None:  # the holder, whoever it is now, keeps renewing
            while True:
                current = LeaseRecord.decode(store.text)
                assert current is not None
                store.text = LeaseRecord(current.holder, current.epoch, TIMERS.ttl, current.seq + 1).encode()
                await asyncio.sleep(TIMERS.renew_interval / 2)

        async def nothing() -> None:
            return None

        passes: list[str] = []
        h3 = ElectionRunner(Elector("h3", TIMERS), store, lambda: passes.append(h3.memory.holder), nothing)
        stop = asyncio.Event()
        renewing = asyncio.create_task(renew_as_holder())
        task = asyncio.create_task(h3.run(stop))
        while h3.state().holder != "h1":
            await asyncio.sleep(0.01)
        store.text = LeaseRecord("h2", 2, TIMERS.ttl, 100).encode()  # h2 took over
        deadline = time.monotonic() + 2
        while "h2" not in passes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        renewing.cancel()
        assert not h3.state().serving
        return passes

    assert asyncio.run(main()) == ["h1", "h2"]  # a pass when it first saw a holder, and at the change
