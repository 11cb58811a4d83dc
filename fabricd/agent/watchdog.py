"""systemd's watchdog: WATCHDOG=1 only while the reconcile loop and every feature are alive.

The pings are sent by a task on the event loop, so a blocked event loop stops them by itself. A
loop that still runs but is stuck (one pass for longer than `stuck_after`, or no pass begun for
the interval plus `stuck_after`) stops them too, and so does a feature that says it is dead (the
BGP speaker whose supervisor ended). systemd then restarts fabricd. Each period also sends a
`STATUS=` line: the one-line health that `systemctl status` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence

from fabricd.agent.feature import Feature
from fabricd.agent.loop import ReconcileLoop
from fabricd.agent.sd_notify import notify
from fabricd.log import get_logger

log = get_logger("fabricd.watchdog")

STUCK_AFTER = 30.0  # seconds: no honest pass takes this long (a cold 50,000-route pass takes ~4 s)


def watchdog_period(environ: dict[str, str] | os._Environ[str] = os.environ) -> float | None:
    """Half of systemd's WatchdogSec, when the watchdog is on for this very process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


class Watchdog:
    def __init__(
        self,
        loop: ReconcileLoop,
        features: Sequence[Feature],
        status_line: Callable[[], str],
        period: float,
        *,
        stuck_after: float = STUCK_AFTER,
        send: Callable[[str], bool] = notify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._features = tuple(features)
        self._status_line = status_line
        self.period = period
        self._stuck_after = stuck_after
        self._send = send
        self._clock = clock
        self.withheld: str | None = None  # why the last ping was not sent

    def dead(self) -> str | None:
        """Why fabricd must be restarted, or None while everything is alive."""
        now, loop = self._clock(), self._loop
        if loop.pass_started_at is not None and now - loop.pass_started_at > self._stuck_after:
            return f"a reconcile pass has run for {now - loop.pass_started_at:.0f}s"
        if loop.pass_started_at is None and now - loop.progress_at > loop.interval + self._stuck_after:
            return f"no reconcile pass for {now - loop.progress_at:.0f}s"
        for feature in self._features:
            reason = feature.dead()
            if reason is not None:
                return f"{feature.name}: {reason}"
        return None

    def tick(self) -> None:
        reason = self.dead()
        if reason is None:
            self._send("WATCHDOG=1")
        elif reason != self.withheld:
            log.error("watchdog pings withheld: systemd will restart fabricd", reason=reason)
        self.withheld = reason
        self._send(f"STATUS={self._status_line() if reason is None else 'stuck: ' + reason}")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period)
