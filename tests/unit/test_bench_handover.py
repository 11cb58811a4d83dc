"""The hand-over benchmark's pure parts: its synthetic tables and its report."""

from __future__ import annotations

import time

import pytest

from bench.handover import EPOCH, SUBNET, parse_args, report, synthetic_leases
from bench.stats import TIMED_OUT, best_median_worst
from fabricd.authority.handover import MAX_LEASES, decode, encode


def test_a_synthetic_table_at_the_cap_is_handed_over_whole() -> None:
    now = time.time()
    handed = decode(encode(synthetic_leases(MAX_LEASES, now), EPOCH, now), EPOCH + 1, SUBNET, now)
    assert (handed.count, handed.refused) == (MAX_LEASES, ())
    assert len(set(handed.lease_file.split())) > 3 * MAX_LEASES  # distinct MACs, addresses, names


def size(leases: int, fetch: list[float], publish: float = 0.05) -> dict[str, object]:
    return {
        "leases": leases,
        "bytes": 1,
        "intact": True,
        "publish_s": best_median_worst([publish]),
        "fetch_s": best_median_worst(fetch),
        "decode_s": best_median_worst([0.001]),
        "take_s": best_median_worst(fetch),
    }


def test_a_read_that_failed_at_the_cap_misses_the_goal_and_ratios_use_the_worst() -> None:
    fine = report([size(16, [0.01]), size(MAX_LEASES, [0.04, 0.1])], rounds=1)
    assert fine["all_goals_met"] and fine["largest_size_read_within_fetch_timeout"] == MAX_LEASES
    assert fine["sizes"][1]["vs_smallest"]["fetch_s"] == 10.0
    failed = report([size(16, [0.01]), size(MAX_LEASES, [0.04, TIMED_OUT])], rounds=1)
    assert not failed["all_goals_met"] and failed["largest_size_read_within_fetch_timeout"] == 16
    assert failed["sizes"][1]["vs_smallest"]["fetch_s"] is None


def test_sizes_beyond_the_cap_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--sizes", f"16,{MAX_LEASES + 1}"])
    assert parse_args(["--sizes", "256,16"]).sizes == [16, 256]
