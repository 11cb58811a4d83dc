"""`python -m fabricd.bgp.exabgp_main server CONFIG`: ExaBGP whose reactor sleeps only when idle.

ExaBGP 5.0's reactor loop (exabgp/reactor/loop.py, `Reactor.run`) ends every turn in
`_wait_for_io(sleep)`, a poll() over the peers' sockets and the API pipe with a timeout of
`reactor.speed / 100` seconds, cut to 0 only when a peer has a message to send at once or a
command line came in during the turn. Queued API work (`ASYNC`, 50 steps a turn: one route of a
bulk line each) does not cut it, so a 50,000-route install sleeps the timeout after every 50
routes: why fabricd used to run ExaBGP at speed 0.2 (2 ms), which wakes the reactor 500 times a
second when nothing happens (3 % of a core).

Here the timeout follows the work instead: 0 while queued API work remains or ran this turn (the
peers send what it queued on the next turn), until just after the next whole second of
time.time() when every session is established and nothing is queued, and ExaBGP's own timeout
(speed 1.0: 10 ms, its default) while a session is being set up (its connect and OPEN steps are
retried on the timeout, not woken by poll()). The pipe and the sockets still wake poll() at once:
a new command or BGP message never waits for the timeout, and so does a signal (a wakeup pipe:
SIGTERM is handled at once, not after the idle poll). Keepalives and the hold timer are checked in
that loop too, on ExaBGP's whole-second timers (int(time.time())): waking `IDLE_MARGIN_MS` after
each second sends every keepalive in the very second it falls due, with one wakeup a second.

If the installed ExaBGP does not have the methods this relies on, it runs unchanged at the old
speed and says so on stderr (ExaBGP's log output, `exabgp.out`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

IDLE_MARGIN_MS = 5  # after the second turns: time.time() and the kernel's poll() timer may differ a little
# `exabgp_reactor_speed` with the patch (ExaBGP's default) and without it (the old setting).
PATCHED_SPEED = "1.0"
UNPATCHED_SPEED = "0.2"
_PATCHED = "_fabricd_idle_wait"


def idle_wait_ms(now: float, margin_ms: int = IDLE_MARGIN_MS) -> int:
    """From `now` (time.time()) until `margin_ms` after the next whole second (pure)."""
    return 1000 - int((now % 1.0) * 1000) + margin_ms


def poll_timeout_ms(requested_ms: int, api_work: bool, all_established: bool, now: float) -> int:
    """The reactor's poll() timeout for this turn (pure).

    requested_ms: what ExaBGP chose (0: a peer or a command wants another turn at once)."""
    if requested_ms <= 0 or api_work:
        return 0
    if all_established:
        return max(requested_ms, idle_wait_ms(now))
    return requested_ms


def install(
    reactor_class: Any, async_class: Any, established: Any, clock: Callable[[], float] = time.time
) -> bool:
    """Patch ExaBGP's reactor classes in place; False (and nothing changed) when they lack the methods.

    established: the FSM state every peer must be in for the idle timeout; clock: ExaBGP's."""
    if getattr(reactor_class, _PATCHED, False):
        return True
    wait = getattr(reactor_class, "_wait_for_io", None)
    run = getattr(async_class, "run", None)
    ready = getattr(async_class, "ready", None)
    if not (callable(wait) and callable(run) and callable(ready)):
        return False

    def tracked_run(self: Any) -> Any:
        # Whether this turn's call had work: what it queued for the peers is sent on the next turn.
        self.fabricd_worked = bool(getattr(self, "_async", None))
        return run(self)

    def sessions_up(reactor: Any) -> bool:
        peers = list(getattr(reactor, "_peers", {}).values())
        return bool(peers) and all(getattr(p, "fsm", None) == established for p in peers)

    def wait_for_io(self: Any, sleeptime: int) -> Iterator[int]:
        wake = getattr(self, "_fabricd_wake", None)
        if wake is None:
            wake = self._fabricd_wake = signal_wakeup(self._poller)
        queue = self.asynchronous
        work = bool(getattr(queue, "fabricd_worked", False)) or not queue.ready()
        for fd in wait(self, poll_timeout_ms(sleeptime, work, sessions_up(self), clock())):
            if fd == wake:
                _drain(fd)  # a signal: the loop's next turn handles it (SIGTERM: Cease, exit)
            else:
                yield fd

    async_class.run = tracked_run
    reactor_class._wait_for_io = wait_for_io
    setattr(reactor_class, _PATCHED, True)
    return True


def signal_wakeup(poller: Any) -> int:
    """A pipe the C signal handler writes to, in ExaBGP's poller: a signal ends a long poll() at
    once (Python retries an interrupted poll() with the time left, so a SIGTERM would otherwise
    wait out the idle timeout). -1 when it cannot be set up (not the main thread)."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    try:
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:
        os.close(read)
        os.close(write)
        return -1
    poller.register(read, select.POLLIN)
    return read


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(fd, 512):
            pass


def _patch_installed() -> bool:
    try:
        from exabgp.bgp.fsm import FSM
        from exabgp.reactor.asynchronous import ASYNC
        from exabgp.reactor.loop import Reactor
    except ImportError:
        return False
    return install(Reactor, ASYNC, FSM.ESTABLISHED)


def main(entry: Callable[[], Any] | None = None) -> int:
    # fabricd sets the speed for the patched reactor; ExaBGP reads its settings at first use, after
    # this, so an unpatched one still gets the old speed.
    if not _patch_installed():
        os.environ["exabgp_reactor_speed"] = UNPATCHED_SPEED  # noqa: SIM112 - ExaBGP's own name
        reason = f"fabricd: ExaBGP's reactor not patched (unknown version): speed {UNPATCHED_SPEED}"
        print(reason, file=sys.stderr)
    if entry is None:
        from exabgp.application.main import main as exabgp

        entry = exabgp
    sys.argv[0] = "exabgp"
    code = entry()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
