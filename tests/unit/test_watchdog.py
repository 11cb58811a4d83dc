"""systemd's watchdog against a NOTIFY_SOCKET the test listens on: pings while the agent is alive,
none once its reconcile loop is stuck or a feature is dead; STATUS= lines beside them."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from fabricd.agent.daemon import Agent
from fabricd.agent.feature import Feature
from fabricd.agent.loop import Key, Observations
from fabricd.agent.watchdog import watchdog_period
from fabricd.config.loader import load_config_text

GATE: Key[int] = Key("gate")


class Gate(Feature):
    """Its applier hangs while `stuck` is set: a pass that never ends, on a live event loop."""

    name = "gate"

    def __init__(self) -> None:
        self.stuck = False
        self.died: str | None = None
        self.release = asyncio.Event()
        self.observers = (self,)
        self.appliers = (self,)
        self.key = GATE
        self.inputs = (GATE,)

    async def observe(self) -> int:
        return 1

    async def apply(self, desired: Observations) -> None:
        if self.stuck:
            await self.release.wait()

    def dead(self) -> str | None:
        return self.died


class Listener:
    """Collects every datagram in a thread, as systemd would, so the sender's queue never fills."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        while self.running:
            try:
                message = self.sock.recv(4096).decode()  # before naming the list: take() swaps it
                self.messages.append(message)
            except TimeoutError:
                continue

    def take(self) -> list[str]:
        taken, self.messages = self.messages, []
        return taken

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def test_watchdog_period_is_half_of_watchdogsec_for_this_process_only() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None  # another's
    assert watchdog_period({}) is None and watchdog_period({"WATCHDOG_USEC": "0"}) is None


def test_pings_stop_when_the_loop_is_stuck_or_a_feature_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify_path = tmp_path / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = load_config_text(
        f"host: {{name: h1, underlay_address: 10.99.1.11}}\n"
        f"control: {{socket: {tmp_path}/fabricd.sock}}\nreconcile: {{interval: 0.05}}\n"
    )
    gate = Gate()
    agent = Agent(config, features=[gate], stuck_after=0.3)

    async def window(seconds: float) -> list[str]:
        listener.take()
        await asyncio.sleep(seconds)
        return listener.take()

    async def main() -> dict[str, list[str]]:
        running = asyncio.create_task(agent.run())
        seen = {"alive": await window(0.5)}
        gate.stuck = True  # the next pass hangs in the applier
        await asyncio.sleep(1.0)  # past stuck_after (0.3 s), and pings already on their way are in
        seen["stuck"] = await window(0.5)
        gate.stuck = False
        gate.release.set()
        await asyncio.sleep(0.2)
        seen["recovered"] = await window(0.5)
        gate.died = "supervisor ended"
        await asyncio.sleep(0.2)
        seen["dead"] = await window(0.5)
        agent.stopping.set()
        assert await running == 0
        return seen

    listener = Listener(notify_path)
    try:
        started = time.monotonic()
        seen = asyncio.run(main())
    finally:
        listener.close()
    assert time.monotonic() - started < 10
    assert seen["alive"].count("WATCHDOG=1") >= 5
    assert any(m.startswith("STATUS=healthy") for m in seen["alive"])
    assert "WATCHDOG=1" not in seen["stuck"], seen["stuck"]
    assert any(m.startswith("STATUS=stuck: a reconcile pass has run for") for m in seen["stuck"])
    assert seen["recovered"].count("WATCHDOG=1") >= 5
    assert "WATCHDOG=1" not in seen["dead"]
    assert "STATUS=stuck: gate: supervisor ended" in seen["dead"]
