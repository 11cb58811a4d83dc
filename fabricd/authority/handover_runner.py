"""The lease hand-over, running: publish while serving, read at a take (see `handover`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any, Protocol

from fabricd.authority.dnsmasq import DnsmasqServer, read_leases
from fabricd.authority.handover import PUBLISH_INTERVAL, HandedOver, decode, encode_rows, table_rows
from fabricd.log import get_logger

log = get_logger("fabricd.authority.handover")

FETCH_TIMEOUT = 0.5  # a take waits no longer for the table: dnsmasq then starts empty
PUBLISH_TIMEOUT = 2.0
# Every renewal moves an expiry: published only this often when nothing else changed (a seeded
# lease that expires early only costs its client what an empty table did).
EXPIRY_REFRESH = 60.0


class Published(Protocol):
    last_error: str

    def fetch(self) -> str | None: ...

    def publish(self, text: str) -> bool: ...


class LeaseHandover:
    def __init__(
        self,
        store: Published,
        dnsmasq: DnsmasqServer,
        subnet: IPv4Network,
        serving: Callable[[], bool],
        epoch: Callable[[], int],
        interval: float = PUBLISH_INTERVAL,
    ) -> None:
        self._store = store
        self._dnsmasq = dnsmasq
        self._subnet = subnet
        self._serving = serving
        self._epoch = epoch
        self._interval = interval
        self._published: str | None = None  # the text LXD has from this host, as far as it knows
        self._published_bindings: list[list[Any]] | None = None  # the same without expiries
        self._published_at = 0.0
        self.last_taken: HandedOver | None = None
        self.publishes = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            if not stop.is_set() and self._serving() and self._dnsmasq.serving:
                await self.publish(self._epoch(), final=False)

    async def publish(self, epoch: int, final: bool = True) -> None:
        """The lease file's table, if it changed; expiry-only changes at most every EXPIRY_REFRESH
        unless `final`."""
        table = await asyncio.to_thread(read_leases, self._dnsmasq.lease_file)
        now = time.time()
        rows = table_rows(table.leases, now)
        text = encode_rows(rows, epoch)
        bindings = [row[1:] for row in rows]  # without the expiries
        if text == self._published:
            return
        if not final and bindings == self._published_bindings and now - self._published_at < EXPIRY_REFRESH:
            return
        try:
            ok = await asyncio.wait_for(asyncio.to_thread(self._store.publish, text), PUBLISH_TIMEOUT)
        except TimeoutError:
            ok, self._store.last_error = False, f"no answer within {PUBLISH_TIMEOUT:g} s"
        if ok:
            self._published, self._published_bindings, self._published_at = text, bindings, now
            self.publishes += 1
        else:
            log.warning(
                "lease table not published; the next authority may start without it",
                epoch=epoch,
                why=self._store.last_error,
            )

    async def on_take(self, epoch: int) -> None:
        """Before this term's dnsmasq starts: the table of the term just ended, if LXD has it."""
        self._published = self._published_bindings = None
        try:
            text = await asyncio.wait_for(asyncio.to_thread(self._store.fetch), FETCH_TIMEOUT)
        except TimeoutError:
            text, self._store.last_error = None, f"no answer within {FETCH_TIMEOUT:g} s"
        taken = decode(text, epoch, self._subnet, time.time())
        self._dnsmasq.seed_leases = taken.lease_file or None
        self.last_taken = taken
        log.info(
            "leases handed over" if taken.count else "no leases handed over",
            event_kind="authority.handover",
            epoch=epoch,
            leases=taken.count,
            refused=len(taken.refused),
            why=taken.why_none or None,
            lxd=self._store.last_error if text is None else None,
        )
        for why in taken.refused[:10]:
            log.warning("handed-over lease refused", event_kind="authority.handover", reason=why)

    async def on_release(self, epoch: int) -> None:
        """On a clean stop, dnsmasq stopped: its final table, for the host that takes over next."""
        await self.publish(epoch)
