"""The standalone part of bench.authority without a lab: its goals against fabricd's own elector, the
figures over rounds (timeouts and missing rounds count), the two-server seconds of a take-back, and
how the part joins the one report."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.authority import add_part, parse_args
from bench.authority_rounds import FailoverRound
from bench.authority_standalone import LAB_FILE, TakeBackRound, lab_settings, standalone_section
from bench.authority_standalone_report import (
    FAILOVER_SLACK_S,
    Reply,
    StandaloneSettings,
    doubled_transactions,
    goal_figure,
    padded,
    standalone_goals,
    two_servers_seconds,
)
from bench.labs import named_lab
from bench.stats import TIMED_OUT
from fabricd.authority.probe import PROBE_TIMEOUT
from fabricd.authority.standalone import (
    TAKEOVER_ALLOWANCE,
    StandaloneElector,
    StandaloneMemory,
    busy_probes,
    rank_probes,
)

LAB_CONFIG = LAB_FILE.parent / "authority-standalone" / "s1" / "fabricd.yaml"


def elector(settings: StandaloneSettings, host: str) -> StandaloneElector:
    """fabricd's elector as the agent builds it (fabricd/authority/feature.py)."""
    interval = settings.probe_interval
    return StandaloneElector(
        host, settings.priority, settings.silent_probes, rank_probes(interval), busy_probes(interval)
    )


def probes_until_serving(settings: StandaloneSettings, host: str, answering: tuple[str, ...]) -> int:
    """Probes the real elector takes to serve while `answering` answer every probe."""
    memory, probes = StandaloneMemory(), 0
    while not memory.serving:
        probes += 1
        memory = elector(settings, host).step(memory, answering)
        assert probes < 1000
    return probes


def lab_goals_settings(tmp_path: Path) -> StandaloneSettings:
    return lab_settings(named_lab(LAB_FILE, "bas", tmp_path))


# ---- goals ----------------------------------------------------------------------------------------


def test_the_settings_are_read_from_every_host_config_of_the_lab(tmp_path: Path) -> None:
    settings = lab_goals_settings(tmp_path)
    text = LAB_CONFIG.read_text()
    assert f"probe_interval: {settings.probe_interval:g}" in text
    assert f"silent_probes: {settings.silent_probes}" in text
    assert settings.priority[0] == "s1" and len(settings.priority) == 3


@pytest.mark.parametrize("interval", [4.0, 5.0, 10.0])
@pytest.mark.parametrize("silent", [1, 2, 7])
def test_the_failover_bound_follows_the_real_electors_count_of_silent_probes(
    interval: float, silent: int
) -> None:
    settings = StandaloneSettings(interval, silent, ("a", "b", "c"))
    goals = standalone_goals(settings)
    silent_needed = probes_until_serving(settings, "b", ())
    assert goals.successor == "b" and goals.takeover_probes == silent_needed
    # The last probe the old server answered went out at the latest at the signal: the deciding probe
    # goes out `silent_needed` intervals after it and decides one window later; then the takeover.
    latest = silent_needed * interval + PROBE_TIMEOUT + TAKEOVER_ALLOWANCE
    assert goals.failover_bound_s == pytest.approx(latest)
    assert goals.failover_earliest_s == pytest.approx((silent_needed - 1) * interval + PROBE_TIMEOUT)
    assert goals.failover_goal_s == pytest.approx(latest + FAILOVER_SLACK_S)
    assert goals.failover_earliest_s < goals.failover_bound_s < goals.failover_goal_s


@pytest.mark.parametrize("interval", [4.0, 5.0])
@pytest.mark.parametrize("silent", [1, 2, 6])
def test_the_take_back_goal_follows_the_real_electors_count_of_outranked_probes(
    interval: float, silent: int
) -> None:
    settings = StandaloneSettings(interval, silent, ("a", "b", "c"))
    heard = probes_until_serving(settings, "a", ("b",))
    goals = standalone_goals(settings)
    # One interval for fabricd's start before its first probe, the rest of the probes, the window.
    assert goals.takeback_goal_s == pytest.approx(heard * interval + PROBE_TIMEOUT + TAKEOVER_ALLOWANCE)
    assert goals.two_servers_goal_s == pytest.approx(interval + PROBE_TIMEOUT)


def test_the_lab_goals_are_the_lab_settings_run_through_the_rules(tmp_path: Path) -> None:
    settings = lab_goals_settings(tmp_path)
    goals = standalone_goals(settings)
    assert goals.takeover_probes == probes_until_serving(settings, settings.priority[1], ())
    # The host ranked third would take over only after the second (it waits longer per rank).
    assert probes_until_serving(settings, settings.priority[2], ()) > goals.takeover_probes
    shown = goals.json()
    assert shown["settings"]["dhcp.probe_interval"] == settings.probe_interval
    assert shown["failover_goal_s"] == goals.failover_goal_s and shown["successor"] == settings.priority[1]


def test_hosts_with_different_settings_are_refused(tmp_path: Path) -> None:
    text = LAB_CONFIG.read_text()
    changed = text.replace("probe_interval: 4", "probe_interval: 5")
    assert changed != text
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(changed)
    with pytest.raises(ValueError, match="differ"):
        StandaloneSettings.from_configs([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert StandaloneSettings.from_configs([tmp_path / "b.yaml"]).probe_interval == 5.0


def test_a_single_host_has_no_failover() -> None:
    with pytest.raises(ValueError):
        standalone_goals(StandaloneSettings(4.0, 2, ("a",)))


# ---- figures --------------------------------------------------------------------------------------


def test_best_median_worst_and_the_goal() -> None:
    shown = goal_figure([44.1, 46.0, 45.2], 48.0)
    assert (shown["best"], shown["median"], shown["worst"]) == (44.1, 45.2, 46.0)
    assert shown["meets_goal"] is True and shown["n"] == 3 and shown["timed_out"] == 0
    assert goal_figure([44.1, 49.0], 48.0)["meets_goal"] is False


def test_a_timed_out_round_is_counted_and_misses_the_goal() -> None:
    shown = goal_figure([44.1, TIMED_OUT, 45.0], 48.0)
    assert shown["n"] == 3 and shown["timed_out"] == 1
    assert shown["worst"] is None and shown["meets_goal"] is False
    assert shown["best"] == 44.1 and shown["median"] == 45.0
    assert shown["samples"] == [44.1, None, 45.0]


def test_no_rounds_meet_no_goal_and_missing_rounds_are_timeouts() -> None:
    assert goal_figure([], 48.0)["meets_goal"] is False
    assert goal_figure([], None).get("meets_goal") is None
    filled = padded([44.0], 3)
    assert filled[0] == 44.0 and len(filled) == 3 and all(math.isinf(x) for x in filled[1:])
    assert padded([1.0, 2.0], 1) == [1.0, 2.0]  # nothing dropped
    assert goal_figure(padded([44.0], 3), 48.0)["meets_goal"] is False


# ---- two servers during a take-back ----------------------------------------------------------------


def replies(*rows: tuple[float, int, str]) -> list[Reply]:
    return [Reply(at, xid, host) for at, xid, host in rows]


def test_two_servers_from_the_returning_hosts_first_reply_to_the_leaving_hosts_last() -> None:
    seen = replies((1.0, 1, "s2"), (9.0, 2, "s1"), (9.0, 2, "s2"), (12.5, 3, "s2"), (13.0, 4, "s1"))
    assert two_servers_seconds(seen, "s1", "s2", observed_until=20.0, quiet=2.0) == pytest.approx(3.5)
    assert doubled_transactions(seen) == {2: {"s1", "s2"}}


def test_no_overlap_when_the_leaving_host_stopped_first() -> None:
    seen = replies((1.0, 1, "s2"), (5.0, 2, "s1"))
    assert two_servers_seconds(seen, "s1", "s2", observed_until=20.0, quiet=2.0) == 0.0
    assert two_servers_seconds(replies((5.0, 2, "s1")), "s1", "s2", 20.0, 2.0) == 0.0
    assert doubled_transactions(seen) == {}


def test_a_take_back_not_seen_to_end_is_a_timeout() -> None:
    never_back = replies((1.0, 1, "s2"), (2.0, 2, "s2"))
    assert math.isinf(two_servers_seconds(never_back, "s1", "s2", 20.0, 2.0))
    still_both = replies((5.0, 1, "s1"), (19.5, 2, "s2"))
    assert math.isinf(two_servers_seconds(still_both, "s1", "s2", 20.0, 2.0))
    assert two_servers_seconds(still_both, "s1", "s2", 22.0, 2.0) == pytest.approx(14.5)


# ---- the part's section and the report ------------------------------------------------------------


def failover(kind: str, index: int, dhcp: float, dns: float) -> FailoverRound:
    round_ = FailoverRound(kind, index, "s1", True, new="s2")
    round_.dhcp_s = {"s1": dhcp - 0.1, "s2": dhcp, "s3": dhcp - 0.2}
    round_.dns_s = {"s1": dns, "s2": dns - 0.1, "s3": dns}
    return round_


def take_back(index: int, serving: float, both: float) -> TakeBackRound:
    round_ = TakeBackRound("take_back_after_sigkill", index, "s2", True, new="s1")
    round_.dhcp_s = {"s1": serving, "s2": serving, "s3": serving}
    round_.two_servers_s = both
    return round_


def fake_bench(
    failovers: list[FailoverRound], takes: list[TakeBackRound], moved: list[str]
) -> SimpleNamespace:
    whole = FailoverRound("whole_run", -1, "", True)
    whole.readdressed = moved
    return SimpleNamespace(
        failovers=failovers,
        takebacks=takes,
        clients=[SimpleNamespace(host="s1", errors=[])],
        whole_run_moves=lambda: whole,
        round_timeout=65.5,
        takeback_timeout=35.0,
        problems=[],
    )


def section(bench: SimpleNamespace, rounds: int, error: str | None = None) -> dict[str, object]:
    goals = standalone_goals(StandaloneSettings(4.0, 2, ("s1", "s2", "s3")))
    return standalone_section(bench, goals, rounds, error)  # type: ignore[arg-type]


def good_rounds(rounds: int) -> tuple[list[FailoverRound], list[TakeBackRound]]:
    failovers = [
        failover(kind, n, 45.0 + n, 45.5 + n) for n in range(rounds) for kind in ("sigkill", "sigterm")
    ]
    return failovers, [take_back(n, 9.0, 2.0) for n in range(2 * rounds)]


def test_a_clean_run_meets_every_goal() -> None:
    failovers, takes = good_rounds(2)
    shown = section(fake_bench(failovers, takes, []), 2)
    assert shown["all_goals_met"] is True, shown["goals"]
    kill = shown["failover_sigkill"]
    assert (kill["dhcp_ack"]["best"], kill["dhcp_ack"]["worst"]) == (45.0, 46.0)  # the slowest client
    assert kill["first_client"]["dhcp_ack"]["best"] == pytest.approx(44.8)


def test_a_failover_past_its_goal_a_slow_take_back_or_a_moved_client_each_miss() -> None:
    failovers, takes = good_rounds(2)
    failovers[0] = failover("sigkill", 0, 60.0, 45.0)
    assert section(fake_bench(failovers, takes, []), 2)["goals"]["failover_sigkill.dhcp_ack"] is False
    failovers, takes = good_rounds(2)
    takes[1] = take_back(1, 9.0, TIMED_OUT)
    shown = section(fake_bench(failovers, takes, []), 2)
    assert shown["goals"]["take_back.two_servers_s"] is False and shown["all_goals_met"] is False
    assert shown["take_back"]["two_servers_s"]["worst"] is None
    failovers, takes = good_rounds(2)
    shown = section(
        fake_bench(failovers, takes, ["fl-bas-c1 (192.168.101.100) was given 192.168.101.101"]), 2
    )
    assert shown["goals"]["readdressed"] is False


def test_a_part_that_stopped_early_counts_its_missing_rounds() -> None:
    failovers, takes = good_rounds(1)
    shown = section(fake_bench(failovers, takes, []), 3, error="TimeoutError: no agreed authority")
    assert shown["failover_sigkill"]["dhcp_ack"]["n"] == 3
    assert shown["failover_sigkill"]["dhcp_ack"]["timed_out"] == 2
    assert shown["take_back"]["serving_again"]["n"] == 6
    assert shown["goals"]["completed"] is False and shown["all_goals_met"] is False


def test_a_skipped_part_makes_all_goals_met_false() -> None:
    result: dict[str, object] = {"goals": {"failover_sigkill.dhcp_ack": True}}
    skipped: list[str] = []
    add_part(result, "standalone", {"goals": {"readdressed": True}}, skipped)
    assert result["all_goals_met"] is True and result["skipped_parts"] == []
    assert result["goals"] == {"failover_sigkill.dhcp_ack": True, "standalone.readdressed": True}
    add_part(result, "standalone", {"skipped": "--standalone-rounds 0"}, skipped)
    assert result["all_goals_met"] is False and result["skipped_parts"] == ["standalone"]
    nothing: dict[str, object] = {"goals": {}}
    add_part(nothing, "standalone", {"goals": {}}, ["cluster"])
    assert nothing["all_goals_met"] is False
    failed: dict[str, object] = {"goals": {}}
    add_part(failed, "standalone", {"goals": {"readdressed": True, "completed": False}}, [])
    assert failed["all_goals_met"] is False


def test_the_command_line() -> None:
    args = parse_args(["--skip-cluster", "--standalone-rounds", "2"])
    assert args.skip_cluster and args.standalone_rounds == 2
    assert parse_args([]).standalone_rounds == 3 and not parse_args([]).skip_cluster
    with pytest.raises(SystemExit):
        parse_args(["--standalone-rounds", "-1"])
