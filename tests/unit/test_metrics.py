"""The metrics endpoint's pure parts: histograms, sample families in Prometheus text, reason labels."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fabricd.agent.health import Verdict
from fabricd.agent.histogram import Histogram
from fabricd.agent.metrics import SnapshotCollector, families
from fabricd.agent.status import HistogramMetric, HostStatus, Metric, StatusSnapshot
from fabricd.routes.reasons import reason_class

HOST = HostStatus("h1", "10.99.1.11", "0.1.0", 42, 0.0)


def scrape(snapshot: StatusSnapshot, found: Verdict) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Serve the snapshot through a registry and read the text back: {sample name: {labels: value}}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, lambda: found))
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_histogram_buckets_are_cumulative_and_immutable() -> None:
    empty = Histogram((0.1, 1.0))
    one = empty.observe(0.05)
    three = one.observe(0.1).observe(7.0)
    assert empty.count == 0 and empty.cumulative() == [(0.1, 0), (1.0, 0), (float("inf"), 0)]
    assert one.count == 1
    assert three.cumulative() == [(0.1, 2), (1.0, 2), (float("inf"), 3)]  # 0.1 is "le 0.1"
    assert three.total == 7.15


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=30))
def test_histogram_counts_every_value_once(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram = histogram.observe(value)
    cumulative = histogram.cumulative()
    assert cumulative[-1][1] == len(values) == histogram.count
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(cumulative))
    for bound, count in cumulative:
        assert count == sum(v <= bound for v in values)


def test_snapshot_samples_become_prometheus_families() -> None:
    pass_seconds = Histogram().observe(0.003).observe(0.2)
    snapshot = StatusSnapshot(
        HOST,
        metrics=(
            Metric("fabricd_routes", 3, (("state", "announced"), ("reason", "none")), "routes"),
            Metric("fabricd_routes", 1, (("state", "refused"), ("reason", "outside_allowed_ranges"))),
            Metric("fabricd_bgp_session_flaps_total", 2, (("peer", "r1"),), "flaps", kind="counter"),
            Metric("fabricd_overlay_fdb_entries", 4),
            HistogramMetric("fabricd_reconcile_pass_seconds", pass_seconds, help="pass time"),
        ),
        built_at=1000.0,
    )
    found = scrape(snapshot, Verdict(3, ("bgp peer r1 is idle",)))
    assert found["fabricd_routes"] == {
        (("reason", "none"), ("state", "announced")): 3.0,
        (("reason", "outside_allowed_ranges"), ("state", "refused")): 1.0,
    }
    assert found["fabricd_bgp_session_flaps_total"] == {(("peer", "r1"),): 2.0}
    assert found["fabricd_overlay_fdb_entries"] == {(): 4.0}
    assert found["fabricd_reconcile_pass_seconds_count"] == {(): 2.0}
    assert found["fabricd_reconcile_pass_seconds_bucket"][(("le", "0.005"),)] == 1.0
    assert found["fabricd_reconcile_pass_seconds_bucket"][(("le", "+Inf"),)] == 2.0
    assert found["fabricd_health_status"] == {(): 3.0} and found["fabricd_problems"] == {(): 1.0}
    assert found["fabricd_info"] == {(("host", "h1"), ("version", "0.1.0")): 1.0}
    assert found["fabricd_status_built_timestamp_seconds"] == {(): 1000.0}


def test_a_family_whose_samples_differ_in_labels_gets_their_union() -> None:
    (family,) = families([Metric("m", 1, (("a", "x"),)), Metric("m", 2, (("b", "y"),))])
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"a": "x", "b": ""}, 1),
        ({"a": "", "b": "y"}, 2),
    ]


def test_a_healthy_empty_snapshot_still_says_who_and_how() -> None:
    found = scrape(StatusSnapshot(HOST), Verdict(0))
    assert found["fabricd_health_status"] == {(): 0.0} and found["fabricd_problems"] == {(): 0.0}


def test_reason_classes_are_a_fixed_few() -> None:
    cases = {
        ("announced", None): "none",
        ("pending", "waiting for r1 to acknowledge"): "awaiting_ack",
        ("partial", "not yet acknowledged by r1-v6"): "awaiting_ack",
        ("pending", "no session it is meant for is up (r1 down)"): "session_down",
        ("pending", "no BGP peer takes IPv6 routes"): "no_peer_for_family",
        ("pending", "no bgp section: nothing is announced"): "no_bgp",
        ("refused", "10.9.0.0/24 is outside the allowed ranges of bridge lxdbr0"): "outside_allowed_ranges",
        ("refused", "also claimed by default/c2"): "conflict",
        ("refused", "default route is never announced"): "policy",
        ("refused", "max_prefixes 100 reached"): "limit",
        ("withheld", "ipv4.nat is on"): "nat",
        ("withheld", "instance is Stopped"): "elsewhere",
        ("refused", "'10.0.0.300/24' is not a prefix"): "invalid",
        ("refused", "something new"): "other",
    }
    for (state, reason), expected in cases.items():
        assert reason_class(state, reason) == expected, (state, reason)


@given(st.sampled_from(["pending", "refused", "withheld", "partial"]), st.text(max_size=60))
def test_any_reason_maps_into_the_fixed_set(state: str, reason: str) -> None:
    labels = {"none", "other", "no_bgp", "awaiting_ack", "no_peer_for_family", "session_down"}
    labels |= {
        "outside_allowed_ranges",
        "conflict",
        "limit",
        "policy",
        "nat",
        "elsewhere",
        "next_hop",
        "invalid",
    }
    assert reason_class(state, reason) in labels


def test_the_grafana_dashboard_reads_only_metrics_the_agent_exports() -> None:
    repo = Path(__file__).parents[2]
    dashboard = json.loads((repo / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"fabricd_\w+", e)}
    source = "".join(p.read_text() for p in (repo / "fabricd").rglob("*.py"))
    exported = set(re.findall(r'"(fabricd_\w+)"', source))
    assert used and used <= exported, used - exported
    assert {"fabricd_health_status", "fabricd_bgp_session_state", "fabricd_routes"} <= used
