"""fabricd's ExaBGP launcher: the reactor's poll timeout follows its work (pure rule, and the real
ExaBGP classes patched in a child process, timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fabricd.bgp.exabgp_main import (
    IDLE_MARGIN_MS,
    PATCHED_SPEED,
    UNPATCHED_SPEED,
    idle_wait_ms,
    install,
    poll_timeout_ms,
)
from fabricd.bgp.speaker import ExaBGPSpeaker
from fabricd.config.model import BGPConfig, HostConfig, PeerConfig

HOST = HostConfig("h1", IPv4Address("10.99.1.11"))
PEER = PeerConfig("r1", IPv4Address("10.99.1.1"), 65000)


NOW = st.floats(1.7e9, 1.8e9, allow_nan=False)


@given(st.integers(-5, 500), st.booleans(), st.booleans(), NOW)
def test_the_timeout_is_zero_with_work_long_when_idle_and_exabgps_own_otherwise(
    requested: int, work: bool, established: bool, now: float
) -> None:
    timeout = poll_timeout_ms(requested, work, established, now)
    if requested <= 0 or work:
        assert timeout == 0  # another turn at once: queued routes are never held back
    elif established:
        assert timeout == max(requested, idle_wait_ms(now))
    else:
        assert timeout == requested  # sessions being set up keep ExaBGP's own retry pace


@given(NOW)
def test_an_idle_wait_ends_just_after_the_next_whole_second(now: float) -> None:
    wait = idle_wait_ms(now)
    woke = now + wait / 1000
    assert int(woke) == int(now) + 1  # the next second: ExaBGP's keepalive timer sees it turn
    assert IDLE_MARGIN_MS / 1000 - 0.0011 <= woke % 1.0 <= IDLE_MARGIN_MS / 1000 + 0.0011
    # woken there, the next wait is a whole second: one wakeup a second when idle
    assert abs(idle_wait_ms(woke) - 1000) <= 1


def test_classes_without_the_methods_are_left_alone() -> None:
    class Reactor:
        pass

    class Queue:
        def run(self) -> None:
            pass

    assert not install(Reactor, Queue, 0x20)
    assert not hasattr(Reactor, "_wait_for_io") and "fabricd_worked" not in vars(Queue)


# The installed ExaBGP's reactor, patched in a child so this process's ExaBGP classes stay as they
# are. poll() with nothing registered sleeps its whole timeout, so the time taken is the timeout;
# with work the 500 ms asked for must become 0.
_TIMED = """
import json, select, sys, time
from exabgp.bgp.fsm import FSM
from exabgp.reactor.asynchronous import ASYNC
from exabgp.reactor.loop import Reactor
from fabricd.bgp.exabgp_main import install

assert install(Reactor, ASYNC, FSM.ESTABLISHED, clock=lambda: 1e9 + 0.7)  # 305 ms to the second's margin

class Peer:
    def __init__(self, state):
        self.fsm = FSM(self, state)

def reactor(*states):
    r = Reactor.__new__(Reactor)
    r.asynchronous, r._poller = ASYNC(), select.poll()
    r._peers = {str(i): Peer(s) for i, s in enumerate(states)}
    return r

def took(r, requested):
    began = time.monotonic()
    list(r._wait_for_io(requested))
    return time.monotonic() - began

def steps():
    for _ in range(3):
        yield

up = reactor(FSM.ESTABLISHED, FSM.ESTABLISHED)
busy = reactor(FSM.ESTABLISHED, FSM.ESTABLISHED)
busy.asynchronous._async.append(("u", steps()))  # schedule() would log, unset up here
ran = reactor(FSM.ESTABLISHED)
ran.asynchronous._async.append(("u", steps()))
ran.asynchronous.run()  # its last step ran this turn: the peers send it on the next
import os, signal, threading
signal.signal(signal.SIGUSR1, lambda *_: None)  # like ExaBGP's: a flag, no exception
threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
began = time.monotonic()
woken = list(up._wait_for_io(10))
signalled = time.monotonic() - began
print(json.dumps({
    "signalled": signalled,
    "signal_fd_yielded": woken,
    "idle": took(up, 10),
    "queued": took(busy, 500),
    "ran_this_turn": took(ran, 500),
    "idle_again": (ran.asynchronous.run(), took(ran, 10))[1],
    "connecting": took(reactor(FSM.ESTABLISHED, FSM.CONNECT), 10),
    "asked_for_now": took(up, 0),
}))
"""


def test_the_installed_exabgp_sleeps_long_only_when_sessions_are_up_and_nothing_is_queued() -> None:
    done = subprocess.run([sys.executable, "-c", _TIMED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    took = json.loads(done.stdout)
    assert took["idle"] >= 0.29 and took["idle_again"] >= 0.29
    assert took["signalled"] < 0.2 and took["signal_fd_yielded"] == []  # a signal ends an idle wait
    for case in ("queued", "ran_this_turn", "connecting", "asked_for_now"):
        assert took[case] < 0.2, (case, took)


def test_the_bundled_exabgp_runs_patched_and_another_one_at_the_old_speed(tmp_path: Path) -> None:
    bundled = ExaBGPSpeaker(BGPConfig(65011, IPv4Address("10.99.1.11"), peers=(PEER,)), HOST, tmp_path / "a")
    child = bundled.supervisor.child
    assert child.argv[:3] == [sys.executable, "-m", "fabricd.bgp.exabgp_main"] and child.argv[3] == "server"
    assert child.env["exabgp_reactor_speed"] == PATCHED_SPEED
    other = Path("/opt/exabgp/bin/exabgp")
    custom = ExaBGPSpeaker(
        BGPConfig(65011, IPv4Address("10.99.1.11"), peers=(PEER,), exabgp=other), HOST, tmp_path
    )
    assert custom.supervisor.child.argv[:2] == [str(other), "server"]
    assert custom.supervisor.child.env["exabgp_reactor_speed"] == UNPATCHED_SPEED
