"""The agent knows features only by their shape: steps, status, commands, stop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fabricd.agent.daemon import Agent
from fabricd.agent.feature import CommandHandler, Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.config.loader import load_config_text

TICKS: Key[int] = Key("ticks")


class Ticker(Feature):
    name = "ticker"

    def __init__(self) -> None:
        self.count = 0
        self.applied: list[int] = []
        self.stopped = False
        self.observers = (self,)
        self.appliers = (self,)
        self.key = TICKS
        self.inputs = (TICKS,)

    async def observe(self) -> int:
        self.count += 1
        return self.count

    async def apply(self, desired: Observations) -> None:
        value = desired.get(TICKS)
        assert value is not None
        self.applied.append(value)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"ticks": lambda status, args: {"ticks": status["ticker"]}, "reset": self._reset}

    def _reset(self, status: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
        """A command that changes state: answered by an awaitable, off the snapshot."""
        if args:
            raise ValueError("reset takes no args")

        async def reset() -> Mapping[str, Any]:
            await asyncio.sleep(0.01)  # stands for I/O done in a worker thread
            before, self.count = self.count, 0
            return {"was": before}

        return reset()

    async def status(self) -> FeatureStatus:
        return FeatureStatus(sections={"ticker": self.count}, problems=("ticker is only a test",))

    async def stop(self) -> None:
        self.stopped = True


def config(tmp_path: Path) -> Any:
    return load_config_text(
        f"host: {{name: h1, underlay_address: 10.99.1.11}}\n"
        f"control: {{socket: {tmp_path}/fabricd.sock}}\n"
        f"reconcile: {{interval: 0.05}}\n"
    )


def ask(path: Path, command: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(path))
        conn.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def test_a_feature_brings_its_steps_status_commands_and_stop(tmp_path: Path) -> None:
    ticker = Ticker()
    agent = Agent(config(tmp_path), features=[ticker])

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        running = asyncio.create_task(agent.run())
        while agent.publisher.current.sections.get("ticker", 0) < 3:
            await asyncio.sleep(0.02)
        path = tmp_path / "fabricd.sock"
        status, ticks, unknown = await asyncio.gather(
            asyncio.to_thread(ask, path, "status"),
            asyncio.to_thread(ask, path, "ticks"),
            asyncio.to_thread(ask, path, "nonsense"),
        )
        reset = await asyncio.to_thread(ask, path, "reset")
        assert reset["ok"] and reset["result"]["was"] >= 3
        agent.stopping.set()
        assert await running == 0
        return status, ticks, unknown

    status, ticks, unknown = asyncio.run(main())
    assert status["ok"] and status["result"]["ticker"] >= 3
    assert "ticker is only a test" in status["result"]["problems"]
    assert ticks["result"]["ticks"] >= 3
    assert not unknown["ok"] and "ticks" in unknown["error"]
    assert ticker.applied[:3] == [1, 2, 3] and ticker.stopped


def test_two_features_cannot_claim_one_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'ticks' is claimed twice"):
        Agent(config(tmp_path), features=[Ticker(), Ticker()])


def test_the_agent_module_names_no_feature() -> None:
    source = Path(__file__).parents[2].joinpath("fabricd", "agent", "daemon.py").read_text().lower()
    for name in ("overlay", "route", "speaker", "exabgp", "lxd", "dhcp", "anycast", "bgp"):
        assert name not in source, name
