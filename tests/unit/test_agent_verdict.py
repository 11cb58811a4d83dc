"""The agent's verdict on its status snapshot: worked out once per snapshot, and never the reason
a replaced snapshot (at scale, 50,000 route rows) stays in memory."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from fabricd.agent import daemon
from fabricd.agent.daemon import Agent
from fabricd.agent.status import StatusSnapshot
from tests.unit.test_agent_features import Ticker, config


def test_the_verdict_is_cached_per_snapshot_and_does_not_hold_a_replaced_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged: list[object] = []
    real = daemon.verdict
    monkeypatch.setattr(daemon, "verdict", lambda status: judged.append(status) or real(status))
    agent = Agent(config(tmp_path), features=[Ticker()])
    host = agent.publisher.current.host
    old = StatusSnapshot(host, sections={"routes": [{"prefix": f"10.0.{i}.0/24"} for i in range(100)]})
    agent.publisher.current = old
    first = agent.health()
    assert agent.health() is first and len(judged) == 1  # the same snapshot is judged once

    gone = weakref.ref(old)
    agent.publisher.current = StatusSnapshot(host, problems=("a BGP peer is down",))
    del old
    gc.collect()
    assert gone() is None, "the verdict cache kept the replaced snapshot alive"
    assert "a BGP peer is down" in agent.health().reasons and len(judged) == 2
