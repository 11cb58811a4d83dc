"""The standalone election, running: each probe's answers drive `StandaloneElector`.

A probe that failed (no bridge yet, a socket error) is no evidence of silence: the state stays.
Taking over asks the reconcile loop for a pass (it claims the address and starts dnsmasq);
yielding withdraws at once, like a fence in cluster mode.
Each tenure starts with an empty lease file, as in cluster mode (`DnsmasqServer` sets the old one
aside at a fresh start).
A standby names as holder the best-ranked host that answered the last good probe; after a probe
nobody answered, the one last heard within `patience` good probes: a busy dnsmasq leaves probes
unanswered (see `fabricd.authority.standalone`), and that must not flip the status to "no authority"
nor move the overlay's entry for the server MAC.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fabricd.authority.prober import ProbeView
from fabricd.authority.standalone import StandaloneElector, StandaloneMemory
from fabricd.authority.state import AuthorityState
from fabricd.log import get_logger

log = get_logger("fabricd.authority.election")


class StandaloneRunner:
    mode = "standalone"

    def __init__(
        self,
        elector: StandaloneElector,
        on_change: Callable[[], None],
        on_yield: Callable[[str], Awaitable[None]],
    ) -> None:
        self._elector = elector
        self._on_change = on_change
        self._on_yield = on_yield
        self.memory = StandaloneMemory()
        self._since: float | None = None
        self._probes = 0  # good probes so far
        self._heard: dict[str, int] = {}  # host → the good probe that last heard its authority
        self._seen: tuple[str, ...] = ()  # hosts whose authority answered the last good probe

    def serving(self) -> bool:
        return self.memory.serving

    def state(self) -> AuthorityState:
        me = self._elector.me
        holder = me if self.memory.serving else self._heard_holder()
        return AuthorityState(self.mode, me, self.memory.serving, holder, self.memory.reason, self._since)

    async def on_probe(self, view: ProbeView) -> None:
        if view.result.error is not None:
            return
        was, holder_before = self.memory.serving, self._heard_holder()
        self._seen = tuple(h for h in view.answering_hosts if h != self._elector.me)
        self._probes += 1
        self._heard.update(dict.fromkeys(self._seen, self._probes))
        self.memory = self._elector.step(self.memory, self._seen)
        if self.memory.serving and not was:
            self._since = time.time()
            log.info("authority taken", event_kind="authority.take", reason=self.memory.reason)
            self._on_change()
        elif was and not self.memory.serving:
            self._since = None
            log.warning("authority yielded", event_kind="authority.fence", reason=self.memory.reason)
            await self._on_yield(self.memory.reason)
            self._on_change()
        elif self._heard_holder() != holder_before:
            self._on_change()  # the overlay's entry for the server MAC follows the holder

    def _heard_holder(self) -> str:
        patience = self._elector.patience
        recent = self._seen or [h for h, n in self._heard.items() if self._probes - n < patience]
        return min(recent, key=lambda h: (self._elector.rank(h), h), default="")
