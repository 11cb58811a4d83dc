"""Serving: the floating server address and dnsmasq, started and stopped together.

Both are started only while the election allows it, and that is checked under one lock right
before the address is claimed, so a fence that runs concurrently always wins: either the claim
sees the fence, or the fence releases after the claim. A claim announces the address once before
dnsmasq starts and repeats it after, so dnsmasq is not kept waiting for the repeats.
Withdrawing drops the address first, so clients stop reaching this dnsmasq at once, whatever it
is doing, and then stops dnsmasq.
While the device exists a helper (`fabricd.authority.deadman`) stands ready to delete it should
fabricd die without releasing it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from fabricd.authority.deadman import LinkDeadman
from fabricd.authority.dnsmasq import DnsmasqServer, ServeAction
from fabricd.authority.dnsmasq_plan import DnsmasqPlan
from fabricd.authority.floating import FloatingAddress, FloatingError
from fabricd.log import get_logger

log = get_logger("fabricd.authority")


class Serving:
    def __init__(
        self, floating: FloatingAddress, dnsmasq: DnsmasqServer, allowed: Callable[[], bool]
    ) -> None:
        self.floating = floating
        self.dnsmasq = dnsmasq
        self._allowed = allowed
        self._lock = threading.Lock()
        self.deadman = LinkDeadman(floating.spec.port)
        self.last_action: str = "not serving"

    async def serve(self, plan: DnsmasqPlan) -> str:
        """Claim the address and make dnsmasq serve `plan`; "not allowed" when the election says no."""
        claimed = await asyncio.to_thread(self._claim)
        if claimed is None:
            return "not allowed"
        if claimed:
            log.info("server address claimed", event_kind="authority.claim", changes=list(claimed))
        action: ServeAction = await self.dnsmasq.serve(plan)
        self.last_action = action
        if claimed and self.floating.announce_rounds > 1:
            await asyncio.to_thread(self._announce_again)
        return action

    async def withdraw(self, why: str) -> None:
        released = await asyncio.to_thread(self._release)
        if released:
            log.info("server address released", event_kind="authority.release_address", reason=why)
        await self.dnsmasq.stop()
        self.last_action = f"stopped: {why}"

    def _claim(self) -> tuple[str, ...] | None:
        with self._lock:
            if not self._allowed():
                return None
            self.deadman.arm()
            return self.floating.claim(rounds=1)

    def _announce_again(self) -> None:
        """The announcement's repeats, each only while still allowed (a fence may come between);
        the lock is not held across the pauses, so a fence never waits for them."""
        try:
            for _ in range(self.floating.announce_rounds - 1):
                time.sleep(self.floating.announce_interval)
                with self._lock:
                    if not self._allowed():
                        return
                    self.floating.announce(1)
        except FloatingError as error:
            log.warning("repeat announcement failed", event_kind="authority.announce", error=str(error))

    def _release(self) -> tuple[str, ...]:
        with self._lock:
            self.deadman.disarm()
            return self.floating.release()
