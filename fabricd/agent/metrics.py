"""The Prometheus endpoint (`metrics.listen`): the last status snapshot's samples, served from a thread.

Scrapes never touch the event loop: the collector reads the snapshot the publisher replaced whole
after the last pass, and samples are turned into metric families in the HTTP server's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fabricd.agent.health import Verdict
from fabricd.agent.status import HistogramMetric, Sample, StatusSnapshot
from fabricd.agent.status import Metric as Gauge
from fabricd.log import get_logger

log = get_logger("fabricd.metrics")


def families(samples: Iterable[Sample]) -> list[Metric]:
    """Samples grouped by name into families; label names are the union over the family's samples
    (a label a sample lacks is empty), so one family never has samples with different label sets."""
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.name, []).append(sample)
    out: list[Metric] = []
    for name, group in grouped.items():
        names = list(dict.fromkeys(key for s in group for key, _ in s.labels))
        help_text = next((s.help for s in group if s.help), name)
        first = group[0]
        family: GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
        if isinstance(first, HistogramMetric):
            family = HistogramMetricFamily(name, help_text, labels=names)
            for sample in group:
                if isinstance(sample, HistogramMetric):
                    buckets = [(_le(bound), float(count)) for bound, count in sample.histogram.cumulative()]
                    family.add_metric(_values(sample, names), buckets, sample.histogram.total)
        else:
            kind = CounterMetricFamily if first.kind == "counter" else GaugeMetricFamily
            family = kind(name, help_text, labels=names)
            for sample in group:
                if isinstance(sample, Gauge):
                    family.add_metric(_values(sample, names), float(sample.value))
        out.append(family)
    return out


def _values(sample: Sample, names: list[str]) -> list[str]:
    labels = dict(sample.labels)
    return [labels.get(name, "") for name in names]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def agent_samples(snapshot: StatusSnapshot, found: Verdict) -> tuple[Gauge, ...]:
    """What the agent itself says: who it is, its verdict, and how fresh the snapshot is."""
    host = snapshot.host
    return (
        Gauge(
            "fabricd_info",
            1.0,
            (("version", host.version), ("host", host.name)),
            "fabricd's version and host name (always 1)",
        ),
        Gauge(
            "fabricd_health_status",
            float(found.code),
            help="fabricctl's exit code for this status: 0 healthy, 3 degraded",
        ),
        Gauge("fabricd_problems", float(len(found.reasons)), help="reasons the agent counts as degraded"),
        Gauge(
            "fabricd_status_built_timestamp_seconds",
            snapshot.built_at or 0.0,
            help="unix time the served status snapshot was built (after a reconcile pass)",
        ),
    )


class SnapshotCollector(Collector):
    def __init__(self, current: Callable[[], StatusSnapshot], health: Callable[[], Verdict]) -> None:
        self._current = current
        self._health = health

    def collect(self) -> Iterator[Metric]:
        snapshot = self._current()
        yield from families((*agent_samples(snapshot, self._health()), *snapshot.metrics))


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics(host: str, port: int, collector: Collector) -> MetricsServer:
    """Bind and serve in a daemon thread; raises OSError when the address cannot be had.
    Blocking (name lookup, bind): call it from a worker thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics endpoint listening", host=host, port=server.server_address[1])
    return MetricsServer(server, thread)
