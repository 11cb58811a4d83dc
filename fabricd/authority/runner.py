"""The election, running: poll the store every renew interval, and fence on time whatever happens.

Two tasks, on purpose:
- the poller reads and writes the store in a worker thread (short LXD timeouts), one call at a
  time; a hung LXD only makes it late;
- the fencer sleeps until the current lease would run out (`ttl - margin` after the last
  successful renewal) and then fences: it calls `on_fence` directly, not through the reconcile
  loop, so no slow step elsewhere in the agent can keep a fenced host serving.
Serving starts through the reconcile loop (`on_change` asks for a pass); stopping never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from fabricd.authority.election import Elector, Memory, StoreRead, Write
from fabricd.authority.state import AuthorityState
from fabricd.log import get_logger

log = get_logger("fabricd.authority.election")


class Store(Protocol):
    def read(self) -> StoreRead: ...

    def write(self, write: Write) -> bool: ...


class ElectionRunner:
    mode = "lxd-cluster"

    def __init__(
        self,
        elector: Elector,
        store: Store,
        on_change: Callable[[], None],
        on_fence: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        on_take: Callable[[int], Awaitable[None]] | None = None,
        on_release: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._elector = elector
        self._store = store
        self._on_change = on_change
        self._on_fence = on_fence
        self._on_take = on_take  # before serving starts (the lease hand-over is read here)
        self._on_release = on_release  # on a clean stop, after serving stopped, before the record is freed
        self._clock = clock
        self.memory = Memory()
        self._serving_since: float | None = None
        self._renewed = asyncio.Event()
        self.fences = 0

    def serving(self) -> bool:
        return self._elector.serving(self.memory, self._clock())

    def state(self) -> AuthorityState:
        now = self._clock()
        serving = self._elector.serving(self.memory, now)
        expires = None
        if serving and self.memory.renewed_at is not None:
            timers = self._elector.timers
            expires = time.time() + (self.memory.renewed_at + timers.ttl - timers.margin - now)
        return AuthorityState(
            self.mode,
            self._elector.me,
            serving,
            self.memory.holder,
            self.memory.reason,
            self._serving_since if serving else None,
            expires,
            self.memory.epoch,
        )

    async def run(self, stop: asyncio.Event) -> None:
        fencer = asyncio.create_task(self._fence_on_time(stop), name="authority-fencer")
        try:
            while not stop.is_set():
                began = self._clock()
                await self._poll()
                wait = max(0.0, self._elector.timers.renew_interval - (self._clock() - began))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            fencer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fencer
            await self._release()

    async def _poll(self) -> None:
        was, holder_before = self._elector.serving(self.memory, self._clock()), self.memory.holder
        read = await asyncio.to_thread(self._store.read)
        memory, write = self._elector.step(self.memory, read, self._clock())
        if write is not None:
            sent = self._clock()
            ok = await asyncio.to_thread(self._store.write, write)
            memory = self._elector.written(memory, write, sent, ok)
            if ok:
                self._renewed.set()
        self.memory = memory
        now_serving = self._elector.serving(memory, self._clock())
        if now_serving and not was:
            self._serving_since = time.time()
            log.info("authority taken", event_kind="authority.take", epoch=memory.epoch, reason=memory.reason)
            if self._on_take is not None:
                await self._on_take(memory.epoch)
            self._on_change()
        elif was and not now_serving:
            await self._fence(memory.reason)
        elif memory.holder != holder_before:
            self._on_change()  # another host took over: the overlay's entry for the server MAC follows

    async def _fence_on_time(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            renewed = self.memory.renewed_at
            if renewed is None:
                self._renewed.clear()
                await self._renewed.wait()
                continue
            timers = self._elector.timers
            left = renewed + timers.ttl - timers.margin - self._clock()
            if left > 0:
                self._renewed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._renewed.wait(), left)
                continue
            if self.memory.renewed_at == renewed:  # no renewal came in time
                self.memory = Memory(
                    epoch=self.memory.epoch, holder=self.memory.holder, reason="lease ran out"
                )
                await self._fence("lease ran out before a renewal succeeded")

    async def _fence(self, why: str) -> None:
        self.fences += 1
        self._serving_since = None
        log.warning("authority fenced", event_kind="authority.fence", reason=why)
        await self._on_fence()
        self._on_change()

    async def _release(self) -> None:
        """On a clean stop: stop serving first, then free the record so a standby takes over."""
        holding = self._elector.serving(self.memory, self._clock())
        if holding:
            await self._fence("fabricd is stopping")
        if holding and self._on_release is not None:  # a fenced holder's table is no longer the newest
            await self._on_release(self.memory.epoch)
        try:
            read = await asyncio.wait_for(asyncio.to_thread(self._store.read), 2.0)
            release = self._elector.release(self.memory, read)
            if release is not None and await asyncio.wait_for(
                asyncio.to_thread(self._store.write, release), 2.0
            ):
                log.info("authority released", event_kind="authority.release", epoch=self.memory.epoch)
        except TimeoutError:
            log.warning("authority not released: LXD did not answer; a standby takes over after the ttl")
