"""The LXD observer: a current snapshot of LXD, healed by resyncs, refreshed by events.

- A full resync runs at start, on every reconnect and every `lxd.resync_interval`, so missed
  events only delay convergence.
- An event re-reads just the object it names (O(changed), not O(everything)).
- Every few seconds the network list is compared and OVN networks are re-read: LXD sends no event
  when the active chassis moves, nor (5.0.2) when a network is created cluster-wide.
- Cluster members are polled by their own observer (`fabricd.lxd.members`).
- An instance on a member LXD cannot reach is listed as a stub (no devices): what was known of it
  is kept (`fabricd.lxd.unreachable`). No event comes when the member answers again, and a new
  instance first listed as a stub has nothing to keep, so while LXD lists stubs everything is
  read again after `STUB_REREAD` seconds, doubling up to `STUB_REREAD_MAX`, not only at the next
  periodic resync.
- While LXD is unreachable the last good snapshot is kept and reported as stale, so announcements
  do not flap; reconnects back off up to `lxd.reconnect_backoff_max`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from fabricd.agent.histogram import Histogram
from fabricd.agent.loop import Key
from fabricd.config.model import LXDConfig
from fabricd.log import get_logger
from fabricd.lxd.api import LXDApi, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.events import EventStream, Hint, InstanceHint, NetworkHint, ResyncHint, classify
from fabricd.lxd.reader import (
    NetworkBundle,
    list_network_keys,
    read_instance,
    read_network,
    read_snapshot,
)
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, RefusedObject
from fabricd.lxd.unreachable import is_stub, keep_unreachable

log = get_logger("fabricd.lxd")
_T = TypeVar("_T")

OVN_STATE_INTERVAL = 5.0
# After a start, addresses arrive with DHCP a little later: a new address waits out the server's
# 3 s ping check, and a client that missed an offer retries. LXD sends no event when an address
# comes, so look again at these delays, after the first two only while a NIC has no address.
ADDRESS_REREADS = (1.0, 3.0, 6.0, 10.0, 20.0, 40.0)
ADDRESS_REREADS_ALWAYS = 2
STUB_REREAD, STUB_REREAD_MAX = 2.0, 60.0


@dataclass(frozen=True, slots=True)
class LXDObservation:
    snapshot: LXDSnapshot | None  # None until the first resync succeeded
    connected: bool
    last_sync_at: float | None
    unreachable_since: float | None
    error: str | None


LXD: Key[LXDObservation] = Key("lxd")


class LXDObserver:
    name = "lxd"
    key = LXD

    def __init__(self, config: LXDConfig, on_change: Callable[[], None]) -> None:
        self.config = config
        self._on_change = on_change
        self._api = LXDApi(config)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lxd")
        self._base: LXDSnapshot | None = None
        self._instances: dict[tuple[str, str], InstanceRecord] = {}
        self._networks: dict[tuple[str, str], NetworkBundle] = {}
        self._refused: dict[tuple[str, str, str], RefusedObject] = {}
        self._snapshot: LXDSnapshot | None = None
        self._changes = 0  # snapshot changes so far: tells whether a re-read changed anything
        self._connected = False
        self._last_sync: float | None = None
        self._unreachable_since: float | None = None
        self._error: str | None = None
        self._hints: asyncio.Queue[InstanceHint | NetworkHint | ResyncHint | None] = asyncio.Queue()
        self._stream: EventStream | None = None
        # Event lag: when each hinted object's first unread event arrived (monotonic), and the
        # oldest event whose re-read changed the snapshot that no pass has observed yet.
        self._arrived: dict[InstanceHint | NetworkHint, float] = {}
        self._unobserved_since: float | None = None
        self.event_lag = Histogram()  # replaced whole; read by the metrics endpoint
        # While LXD lists stubs: when to read everything again (monotonic), and the current wait.
        self._stub_reread_at: float | None = None
        self._stub_wait: float | None = None

    async def observe(self) -> LXDObservation:
        if self._unobserved_since is not None:
            self.event_lag = self.event_lag.observe(time.monotonic() - self._unobserved_since)
            self._unobserved_since = None
        return self.observation()

    def observation(self) -> LXDObservation:
        """The current view, for status between reconcile passes."""
        return LXDObservation(
            self._current(), self._connected, self._last_sync, self._unreachable_since, self._error
        )

    # ---- snapshot store ------------------------------------------------------------------------

    def _current(self) -> LXDSnapshot | None:
        if self._snapshot is None and self._base is not None:
            bundles = list(self._networks.values())
            self._snapshot = LXDSnapshot(
                member=self._base.member,
                clustered=self._base.clustered,
                projects=self._base.projects,
                networks=tuple(b.network for b in bundles),
                instances=tuple(self._instances.values()),
                forwards=tuple(f for b in bundles for f in b.forwards),
                load_balancers=tuple(lb for b in bundles for lb in b.load_balancers),
                members=self._base.members,
                refused=tuple(self._refused.values()),
            )
        return self._snapshot

    def _changed(self) -> None:
        self._snapshot = None
        self._changes += 1
        self._on_change()

    def _load_full(self, snapshot: LXDSnapshot) -> None:
        self._base = snapshot
        self._plan_stub_reread(sum(map(is_stub, snapshot.instances)), full=True)
        instances = keep_unreachable(self._instances, snapshot.instances)
        self._instances = {(i.project, i.name): i for i in instances}
        self._networks = {}
        for network in snapshot.networks:
            key = (network.project, network.name)
            forwards = tuple(f for f in snapshot.forwards if (f.project, f.network) == key)
            balancers = tuple(lb for lb in snapshot.load_balancers if (lb.project, lb.network) == key)
            self._networks[key] = NetworkBundle(network, forwards, balancers)
        self._refused = {(r.kind, r.project, r.name): r for r in snapshot.refused}
        self._last_sync = time.time()
        self._changed()

    def _put_instance(self, key: tuple[str, str], result: InstanceRecord | RefusedObject | None) -> None:
        if isinstance(result, InstanceRecord):
            self._plan_stub_reread(int(is_stub(result)), full=False)
            (result,) = keep_unreachable(self._instances, [result])
        self._put(self._instances, "instance", key, result, InstanceRecord)

    def _plan_stub_reread(self, stubs: int, full: bool) -> None:
        """After a read with `stubs` stubs: a full read with none ends the re-reads, a full read
        with some waits twice as long as the last, a single stub starts them if none is planned."""
        if not stubs:
            if full:
                self._stub_reread_at = self._stub_wait = None
            return
        if not full and self._stub_reread_at is not None:
            return
        wait = STUB_REREAD if self._stub_wait is None else min(self._stub_wait * 2, STUB_REREAD_MAX)
        self._stub_wait, self._stub_reread_at = wait, time.monotonic() + wait
        log.info("lxd lists instances it cannot reach; reading again", stubs=stubs, in_seconds=wait)

    def _put_network(self, key: tuple[str, str], result: NetworkBundle | RefusedObject | None) -> None:
        self._put(self._networks, "network", key, result, NetworkBundle)

    def _put(
        self,
        store: dict[tuple[str, str], _T],
        kind: str,
        key: tuple[str, str],
        result: _T | RefusedObject | None,
        record_type: type[_T],
    ) -> None:
        """Store one re-read object (record, refusal or gone); on_change only when something changed."""
        refused_key = (kind, *key)
        record = result if isinstance(result, record_type) else None
        refusal = result if isinstance(result, RefusedObject) else None
        if store.get(key) == record and self._refused.get(refused_key) == refusal:
            return
        if record is None:
            store.pop(key, None)
        else:
            store[key] = record
        if refusal is None:
            self._refused.pop(refused_key, None)
        else:
            self._refused[refused_key] = refusal
        self._changed()

    # ---- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        first_backoff = min(1.0, self.config.reconnect_backoff_max)
        backoff = first_backoff
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff = first_backoff
            except (LXDUnavailable, LXDRequestFailed) as exc:
                # LXDRequestFailed here means a full resync failed (403 untrusted, 500...): no fresh
                # snapshot can be had, so it is handled like an unreachable LXD rather than ending run().
                self._mark_unreachable(str(exc))
                log.warning("lxd unreachable; holding the last snapshot", reason=str(exc), retry_in=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, self.config.reconnect_backoff_max)
            finally:
                self._close_stream()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _session(self, stop: asyncio.Event) -> None:
        """One connected period: events on, a full resync, then events until the stream ends."""
        loop = asyncio.get_running_loop()
        self._hints = asyncio.Queue()
        self._arrived.clear()  # the last session's unread hints went with its queue
        self._stream = await self._blocking(self._open_stream, loop)
        await self._resync("connect")
        self._connected, self._unreachable_since, self._error = True, None, None
        log.info("lxd connected", endpoint=self._api.describe(), instances=len(self._instances))
        next_full = time.monotonic() + self.config.resync_interval
        next_ovn = time.monotonic() + OVN_STATE_INTERVAL
        while not stop.is_set():
            wake = min(next_full, next_ovn, self._stub_reread_at or next_full)
            timeout = max(0.0, wake - time.monotonic())
            hint = await _get_or_timeout(self._hints, stop, timeout)
            if isinstance(hint, ResyncHint) and hint.reason.startswith("events websocket"):
                raise LXDUnavailable(hint.reason)
            if hint is not None:
                await self._apply_hint(hint)
            now = time.monotonic()
            if now >= next_full:
                await self._resync("periodic")
                next_full = now + self.config.resync_interval
            elif self._stub_reread_at is not None and now >= self._stub_reread_at:
                await self._resync("instances listed unreachable")
            if now >= next_ovn:
                await self._refresh_networks()
                next_ovn = now + OVN_STATE_INTERVAL

    def _open_stream(self, loop: asyncio.AbstractEventLoop) -> EventStream:
        hints = self._hints  # this session's queue: a late close of this stream must not end the next

        def on_message(data: bytes) -> None:
            loop.call_soon_threadsafe(self._on_event, data)

        def on_close(reason: str) -> None:
            loop.call_soon_threadsafe(hints.put_nowait, ResyncHint(f"events websocket: {reason}"))

        try:
            stream = EventStream(self._api, self.config.project, on_message, on_close)
            stream.start()
        except LXDUnavailable:
            raise
        except Exception as exc:  # pylxd/ws4py raise many kinds; all mean "not reachable now"
            raise LXDUnavailable(f"{self._api.describe()}: events: {type(exc).__name__}: {exc}") from exc
        return stream

    def _on_event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        hint = classify(event) if isinstance(event, dict) else None
        if hint is not None:
            if not isinstance(hint, ResyncHint):
                self._arrived.setdefault(hint, time.monotonic())
            self._hints.put_nowait(hint)
            if isinstance(hint, InstanceHint) and "started" in str(event.get("metadata", {}).get("action")):
                loop, hints = asyncio.get_running_loop(), self._hints
                for n, delay in enumerate(ADDRESS_REREADS):
                    loop.call_later(delay, self._reread_started, hint, hints, n < ADDRESS_REREADS_ALWAYS)

    def _reread_started(self, hint: InstanceHint, hints: asyncio.Queue[Hint | None], always: bool) -> None:
        record = self._instances.get((hint.project, hint.name))
        if always or record is None or not record.running or any(not nic.addresses for nic in record.nics):
            hints.put_nowait(hint)

    async def _apply_hint(self, hint: InstanceHint | NetworkHint | ResyncHint) -> None:
        arrived = None if isinstance(hint, ResyncHint) else self._arrived.pop(hint, None)
        changes = self._changes
        try:
            await self._read_hinted(hint)
        finally:
            if arrived is not None and self._changes != changes:
                oldest = self._unobserved_since
                self._unobserved_since = arrived if oldest is None else min(oldest, arrived)

    async def _read_hinted(self, hint: InstanceHint | NetworkHint | ResyncHint) -> None:
        try:
            if isinstance(hint, InstanceHint):
                key = (hint.project, hint.name)
                self._put_instance(key, await self._blocking(read_instance, self._api, *key))
            elif isinstance(hint, NetworkHint):
                key = (hint.project, hint.name)
                self._put_network(key, await self._blocking(read_network, self._api, *key))
            else:
                await self._resync(hint.reason)
        except LXDRequestFailed as exc:
            log.warning("lxd read failed; resyncing", hint=str(hint), reason=str(exc))
            await self._resync("read failed")

    async def _resync(self, reason: str) -> None:
        started = time.monotonic()
        snapshot = await self._blocking(read_snapshot, self._api, self.config.project)
        self._load_full(snapshot)
        for refused in snapshot.refused:
            log.warning(
                "lxd object refused",
                kind=refused.kind,
                project=refused.project,
                name=refused.name,
                reason=refused.reason,
            )
        log.info(
            "lxd resync",
            reason=reason,
            seconds=round(time.monotonic() - started, 3),
            instances=len(snapshot.instances),
            networks=len(snapshot.networks),
        )

    async def _refresh_networks(self) -> None:
        """LXD sends no event when an OVN gateway moves, nor (5.0.2) for a network created
        cluster-wide: re-read the OVN networks, and any network that appeared or vanished. A
        standalone server with no OVN network sends an event for every change: nothing to poll."""
        ovn = {key for key, bundle in self._networks.items() if bundle.network.type == "ovn"}
        if not ovn and not (self._base is not None and self._base.clustered):
            return
        listed = await self._blocking(list_network_keys, self._api, self.config.project)
        known = set(self._networks)
        for key in sorted((listed ^ known) | (ovn & listed)):
            await self._apply_hint(NetworkHint(*key))

    async def _blocking(self, func: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _mark_unreachable(self, reason: str) -> None:
        was_connected = self._connected
        if self._connected or self._unreachable_since is None:
            self._unreachable_since = time.time()
        self._connected = False
        self._error = reason
        if was_connected:
            self._on_change()

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _get_or_timeout(
    queue: asyncio.Queue[InstanceHint | NetworkHint | ResyncHint | None], stop: asyncio.Event, timeout: float
) -> InstanceHint | NetworkHint | ResyncHint | None:
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return getter.result() if getter in done else None
    finally:
        getter.cancel()
        stopper.cancel()
