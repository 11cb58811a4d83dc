"""The DHCP probe, running: a DISCOVER on the overlay every `dhcp.probe_interval`, in a thread.

Every host probes, authority or not, so each one's status shows every server on the overlay. A
server that is not the floating one (another MAC or server identifier) is a second server: a loud
log line when the set of them changes, and a standing status problem while it answers. Two answers
with the floating identity mean two hosts serve as the authority at once. Whenever what the status
shows changes, `on_news` asks for a pass, so the status is rebuilt then, not at the next interval
(the lab saw a holder report a removed second server 10 s after its probe knew).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fabricd.authority.floating import FloatingSpec
from fabricd.authority.macs import probe_mac
from fabricd.authority.probe import ProbeResult, ServerSeen, is_ours, probe
from fabricd.log import get_logger

log = get_logger("fabricd.authority.probe")


@dataclass(frozen=True, slots=True)
class ProbeView:
    """The last probe, split into the authority's own answers and everyone else's."""

    result: ProbeResult
    ours: tuple[ServerSeen, ...]
    others: tuple[ServerSeen, ...]

    @property
    def answering_hosts(self) -> tuple[str, ...]:
        """The hosts whose authority answered ("?" for an answer without fabricd's host option)."""
        return tuple(sorted({seen.host or "?" for seen in self.ours}))

    @property
    def doubled(self) -> bool:
        """The floating identity answered more than once: two hosts serve at once."""
        return len(self.answering_hosts) > 1 or any(seen.offers > 1 for seen in self.ours)


def split_answers(result: ProbeResult, spec: FloatingSpec) -> ProbeView:
    ours = tuple(s for s in result.servers if is_ours(s, spec.mac, spec.address.ip))
    others = tuple(s for s in result.servers if not is_ours(s, spec.mac, spec.address.ip))
    return ProbeView(result, ours, others)


def describe(seen: ServerSeen) -> str:
    server_id = seen.server_id if seen.server_id is not None else seen.ip
    host = f" (host {seen.host})" if seen.host else ""
    return f"{server_id} from MAC {seen.mac}{host}"


class Prober:
    def __init__(
        self,
        spec: FloatingSpec,
        interval: float,
        on_probe: Callable[[ProbeView], Awaitable[None]] | None = None,
        run_probe: Callable[[str, str], ProbeResult] | None = None,
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.interval = interval
        self._on_probe = on_probe
        self._on_news = on_news
        self._run_probe = run_probe or (lambda interface, mac: probe(interface, mac))
        self.last: ProbeView | None = None
        self.probes = 0
        self.second_servers_seen = 0  # probes that saw a server other than the authority's

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            result = await asyncio.to_thread(self._run_probe, self.spec.bridge, probe_mac(self.spec.vni))
            view = split_answers(result, self.spec)
            self._report(view)
            news = self.last is None or _shown(view) != _shown(self.last)
            self.last = view
            if news and self._on_news is not None:
                self._on_news()
            self.probes += 1
            if self._on_probe is not None:
                await self._on_probe(view)
            wait = max(0.0, self.interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def _report(self, view: ProbeView) -> None:
        before = self.last
        if view.others:
            self.second_servers_seen += 1
        if view.result.error is not None:
            if before is None or before.result.error != view.result.error:
                log.warning("DHCP probe failed", event_kind="authority.probe_failed", error=view.result.error)
            return
        seen = {s.identity for s in view.others}
        if before is None or seen != {s.identity for s in before.others}:
            if view.others:
                log.error(
                    "second DHCP server on the overlay",
                    event_kind="authority.second_server",
                    servers=[describe(s) for s in view.others],
                    bridge=self.spec.bridge,
                )
            elif before is not None and before.others:
                log.info("second DHCP server gone", event_kind="authority.second_server_gone")
        if view.doubled and (before is None or not before.doubled):
            log.error(
                "two hosts answer as the authority",
                event_kind="authority.doubled",
                hosts=list(view.answering_hosts),
            )


def _shown(view: ProbeView) -> tuple[object, ...]:
    """What the status shows of a probe: its error, who answered, every second server."""
    return view.result.error, view.answering_hosts, view.doubled, frozenset(s.identity for s in view.others)
