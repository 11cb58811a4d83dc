"""The LXD cluster's members, polled: LXD sends no event when a member goes offline.

Overlay peers, the DHCP/DNS election and service locality all need to know which members are up,
and quickly, so this is its own observer with its own worker thread: a slow full resync in the
LXD observer never delays it. On a standalone server it reads nothing and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.agent.loop import Key
from fabricd.config.model import LXDConfig
from fabricd.log import get_logger
from fabricd.lxd.api import LXDApi, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.reader import read_members
from fabricd.lxd.records import MemberRecord

log = get_logger("fabricd.lxd.members")

POLL_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class MemberView:
    members: tuple[MemberRecord, ...] | None  # None until read once (or not clustered)
    read_at: float | None = None
    error: str | None = None

    def online(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members or () if m.status == "Online")


MEMBERS: Key[MemberView] = Key("lxd-members")


class MemberObserver(Feature):
    name = "lxd-members"
    key = MEMBERS

    def __init__(
        self, config: LXDConfig, on_change: Callable[[], None], interval: float = POLL_INTERVAL
    ) -> None:
        self._api = LXDApi(config)
        self._on_change = on_change
        self._interval = interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lxd-members")
        self.view = MemberView(None, error="not read yet")
        self.observers = (self,)

    async def observe(self) -> MemberView:
        return self.view

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        return (self._poll(stop),)

    async def _poll(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                members = tuple(await loop.run_in_executor(self._executor, read_members, self._api))
                view = MemberView(members, time.time())
            except (LXDUnavailable, LXDRequestFailed) as exc:
                # Keep the last members: a member list that vanishes with LXD would empty the
                # overlay's flood list; the LXD observer reports LXD as unreachable.
                view = MemberView(self.view.members, self.view.read_at, str(exc))
            if view.members != self.view.members:
                log.info(
                    "lxd cluster members changed", members={m.name: m.status for m in view.members or ()}
                )
                self.view = view
                self._on_change()
            else:
                self.view = view
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def status(self) -> FeatureStatus:
        view = self.view
        problems = () if view.error is None or view.members is None else (f"lxd members: {view.error}",)
        return FeatureStatus(problems=problems)
