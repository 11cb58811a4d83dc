"""The decisions ring: bounded, structured, and a cold start summed up instead of flooding."""

from __future__ import annotations

from fabricd.agent.decisions import DecisionLog


def test_the_ring_keeps_the_newest_decisions() -> None:
    log = DecisionLog(size=3)
    for n in range(5):
        log.record("bgp.peer", f"r{n}", f"session {n} is established", state="established")
    recent = log.recent()
    assert [d["subject"] for d in recent] == ["r2", "r3", "r4"]
    assert recent[-1]["event"] == "bgp.peer" and recent[-1]["state"] == "established"
    assert log.recorded == 5


def test_a_large_batch_is_summed_up_after_the_limit() -> None:
    log = DecisionLog(size=100, per_batch_limit=2)
    shown = [(f"10.0.{n}.0/24", f"announce {n}", {}) for n in range(3)]
    log.record_batch("route.announce", shown, 10)
    recent = log.recent()
    assert [d["subject"] for d in recent] == ["10.0.0.0/24", "10.0.1.0/24", "8 more"]
    assert "8 more route.announce" in recent[-1]["reason"]
    assert log.recorded == 10
