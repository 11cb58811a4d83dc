"""SIGHUP reloads the agent's config: applied between passes, or refused with the old one kept."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from fabricd.agent.daemon import Agent
from fabricd.agent.feature import Feature
from fabricd.agent.loop import Key, Observations
from fabricd.config import FabricConfig, load_config
from fabricd.config.reload import ConfigChange
from tests.unit.test_agent_features import ask

PASSES: Key[int] = Key("passes")


class Recorder(Feature):
    """Counts passes and records each reconfigure, checking that no pass is running meanwhile."""

    name = "recorder"

    def __init__(self) -> None:
        self.observers = (self,)
        self.appliers = (self,)
        self.key = PASSES
        self.inputs = (PASSES,)
        self.passes = 0
        self.in_pass = False
        self.reconfigured: list[tuple[FabricConfig, ConfigChange]] = []
        self.overlapped = False

    async def observe(self) -> int:
        self.in_pass = True
        await asyncio.sleep(0.01)  # a pass that takes a while, so a reload could land inside one
        self.passes += 1
        return self.passes

    async def apply(self, desired: Observations) -> None:
        await asyncio.sleep(0.01)
        self.in_pass = False

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        self.overlapped |= self.in_pass
        self.reconfigured.append((config, change))


def write(
    path: Path, tmp_path: Path, *, host: str = "h1", ranges: str = "10.201.0.0/16", extra: str = ""
) -> None:
    path.write_text(
        f"host: {{name: {host}, underlay_address: 10.99.1.11}}\n"
        f"control: {{socket: {tmp_path}/fabricd.sock}}\n"
        f"reconcile: {{interval: 0.02}}\n"
        f"routes: {{allowed_ranges: [{ranges}]}}\n{extra}"
    )


def test_sighup_applies_refuses_and_reports(tmp_path: Path) -> None:
    file = tmp_path / "fabricd.yaml"
    write(file, tmp_path)
    recorder = Recorder()
    agent = Agent(load_config(file), features=[recorder])
    sock = tmp_path / "fabricd.sock"

    async def reload_and_status() -> dict[str, Any]:
        before = agent.reload.last
        os.kill(os.getpid(), signal.SIGHUP)
        while agent.reload.last is before:
            await asyncio.sleep(0.01)
        await agent.reload.wait()
        built = agent.publisher.current.built_at or 0.0
        while (agent.publisher.current.built_at or 0.0) <= max(
            built, agent.reload.last.at if agent.reload.last else 0
        ):
            await asyncio.sleep(0.01)
        reply = await asyncio.to_thread(ask, sock, "status")
        result: dict[str, Any] = reply["result"]
        return result

    async def main() -> list[dict[str, Any]]:
        running = asyncio.create_task(agent.run())
        while recorder.passes < 2:
            await asyncio.sleep(0.01)
        seen = []
        write(file, tmp_path, ranges="10.201.0.0/16, 10.202.0.0/16")
        seen.append(await reload_and_status())
        write(file, tmp_path, extra="routes_typo: 1\n")
        seen.append(await reload_and_status())
        write(file, tmp_path, host="h2")
        seen.append(await reload_and_status())
        write(file, tmp_path, ranges="10.203.0.0/16")
        seen.append(await reload_and_status())
        events = await asyncio.to_thread(ask, sock, "events")
        seen.append(events["result"])
        agent.stopping.set()
        assert await running == 0
        return seen

    applied, invalid, refused, again, events = asyncio.run(main())

    assert applied["config"]["last_reload"]["outcome"] == "applied"
    assert applied["config"]["last_reload"]["changed"] == ["routes.allowed_ranges"]
    assert not any("config reload" in p for p in applied["problems"])

    assert invalid["config"]["last_reload"]["outcome"] == "invalid"
    assert invalid["config"]["last_reload"]["problems"] == [
        f"{file}:5: routes_typo: unknown key 'routes_typo'; expected one of: host, lxd, bgp, overlay, dhcp, "
        "services, routes, control, metrics, logging, reconcile, daemon (did you mean 'routes'?)"
    ]
    assert any(p.startswith("config reload invalid, the running config stays") for p in invalid["problems"])

    assert refused["config"]["last_reload"]["outcome"] == "refused"
    assert refused["config"]["last_reload"]["reason"] == "changing host.name needs a restart"
    assert any("changing host.name needs a restart" in p for p in refused["problems"])

    assert again["config"]["last_reload"]["outcome"] == "applied"
    assert not any("config reload" in p for p in again["problems"])

    # Only the two good files reached the features, between passes, with the new policy each time.
    assert [str(c.routes.allowed_ranges) for c, _ in recorder.reconfigured] == [
        "(IPv4Network('10.201.0.0/16'), IPv4Network('10.202.0.0/16'))",
        "(IPv4Network('10.203.0.0/16'),)",
    ]
    assert not recorder.overlapped
    assert agent.reload.config.routes.allowed_ranges == recorder.reconfigured[-1][0].routes.allowed_ranges
    outcomes = [e["outcome"] for e in events["events"] if e["event"] == "config.reload"]
    assert outcomes == ["applied", "invalid", "refused", "applied"]


def test_requests_during_a_reload_end_in_one_more_reload_of_the_latest_file(tmp_path: Path) -> None:
    file = tmp_path / "fabricd.yaml"
    write(file, tmp_path)
    recorder = Recorder()
    agent = Agent(load_config(file), features=[recorder])

    async def main() -> None:
        running = asyncio.create_task(agent.run())
        while recorder.passes < 1:
            await asyncio.sleep(0.01)
        write(file, tmp_path, ranges="10.210.0.0/16")
        agent.reload.request()
        write(file, tmp_path, ranges="10.211.0.0/16")
        agent.reload.request()  # under way: coalesced into one more
        agent.reload.request()
        await agent.reload.wait()
        agent.stopping.set()
        assert await running == 0

    asyncio.run(main())
    applied = [str(c.routes.allowed_ranges[0]) for c, _ in recorder.reconfigured]
    # Requests made before a reload reads the file are served by it; one made while it runs gets
    # one more after it. Either way the last file is the one applied, and nothing is applied twice.
    assert applied in (["10.211.0.0/16"], ["10.210.0.0/16", "10.211.0.0/16"])
    assert agent.reload.last is not None and agent.reload.last.outcome in ("applied", "unchanged")
    events = [d["outcome"] for d in agent.decisions.recent() if d["event"] == "config.reload"]
    assert events in (["applied"], ["applied", "unchanged"], ["applied", "applied"])
