"""The worker's metrics, served at `/metrics` on its web server (Prometheus text format).

The agents hand their outputs straight to the producer (streams/app.py), past Faust's send
sensors, so they are counted here, where they are published. Lag and table sizes are read when
Prometheus scrapes.

The metric names and labels are listed in the README (Operations, Worker metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailstream.streams.records import Output
from mailstream.topics import TopicNames

RECEIVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EVENT_TIME_BUCKETS = (1.0, 10.0, 60.0, 300.0, 3600.0, 21600.0, 86400.0, 604800.0)
# aiohttp takes the charset apart from the media type (the exposition is UTF-8 all the same).
EXPOSITION_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)
Lag = Callable[[], Mapping[tuple[str, int], int]]
Dropped = Callable[[], Mapping[str, int]]  # source topic -> records dropped
Uncounted = Callable[[], Mapping[str, int]]  # reason -> events left out of deliverability
ERASED = "erased"  # the reason label of records dropped because their recipient is erased


class WorkerMetrics:
    def __init__(self, names: TopicNames, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._names = names
        registry = self.registry
        self._records = Counter(
            "mailstream_worker_records", "Input records processed", ["topic"], registry=registry
        )
        self._events = Counter(
            "mailstream_worker_events",
            "Canonical events published",
            ["event_type"],
            registry=registry,
        )
        self._dead_letters = Counter(
            "mailstream_worker_dead_letters", "Dead letters written", ["kind"], registry=registry
        )
        self._suppressions = Counter(
            "mailstream_worker_suppressions",
            "Suppression records published (LIFTED: a tombstone)",
            ["reason"],
            registry=registry,
        )
        self._states = Counter(
            "mailstream_worker_states", "Recipient states published", registry=registry
        )
        self._late = Counter(
            "mailstream_worker_late_events",
            "Events applied after the reorder window had passed their event time",
            registry=registry,
        )
        self._receive_latency = Histogram(
            "mailstream_worker_receive_to_publish_seconds",
            "Ingest receive time to the recipient state's publication",
            buckets=RECEIVE_BUCKETS,
            registry=registry,
        )
        self._event_latency = Histogram(
            "mailstream_worker_event_to_publish_seconds",
            "Event time (occurred_at) to the recipient state's publication",
            buckets=EVENT_TIME_BUCKETS,
            registry=registry,
        )
        self.rebalances = Counter(
            "mailstream_worker_rebalances", "Consumer-group rebalances completed", registry=registry
        )
        self._children: dict[tuple[int, str], Any] = {}

    def watch(
        self,
        lag: Lag,
        tables: Mapping[str, Callable[[], int]],
        erased_dropped: Dropped,
        uncounted: Uncounted,
    ) -> None:
        """Read the consumer's lag, the tables' sizes and the processors' counts of records
        dropped for an erased recipient (they have no output to count) at every scrape."""
        self.registry.register(_ScrapeTime(lag, tables, erased_dropped, uncounted))

    def count(self, source_topic: str, outputs: Iterable[Output]) -> None:
        self._child(self._records, source_topic).inc()
        now = time.time()
        for output in outputs:
            topic = output.topic
            if topic == self._names.recipient_state:
                self._states.inc()
                if output.received_at is not None:
                    self._receive_latency.observe(max(0.0, now - output.received_at / 1000))
                if output.occurred_at is not None:
                    self._event_latency.observe(max(0.0, now - output.occurred_at / 1000))
                if output.label == "late":
                    self._late.inc()
            elif topic == self._names.events:
                self._child(self._events, output.label).inc()
            elif topic == self._names.dead_letters:
                self._child(self._dead_letters, output.label).inc()
            elif topic == self._names.suppressions:
                self._child(self._suppressions, output.label).inc()

    def _child(self, family: Counter, label: str) -> Any:
        """The labelled counter, looked up once (`labels()` costs a lock and a dict per call)."""
        key = (id(family), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(label)
        return child


def add_metrics_page(app: faust.App, metrics: WorkerMetrics) -> None:
    """`GET /metrics` on the worker's web server (behind the same token as the queries)."""

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            exposition = generate_latest(metrics.registry)
            return self.bytes(exposition, content_type=EXPOSITION_TYPE)


class _ScrapeTime(Collector):
    def __init__(
        self,
        lag: Lag,
        tables: Mapping[str, Callable[[], int]],
        erased_dropped: Dropped,
        uncounted: Uncounted,
    ) -> None:
        self._lag = lag
        self._tables = tables
        self._erased_dropped = erased_dropped
        self._uncounted = uncounted

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "mailstream_worker_consumer_lag",
            "End offset minus committed offset of each assigned partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self._lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        entries = GaugeMetricFamily(
            "mailstream_worker_table_entries",
            "Entries in this worker's partitions of each table",
            labels=["table"],
        )
        for name, size in self._tables.items():
            entries.add_metric([name], size())
        yield entries
        dropped = CounterMetricFamily(
            "mailstream_worker_dropped_records",
            "Input records dropped without any output (erased: their recipient is erased)",
            labels=["topic", "reason"],
        )
        for topic, count in sorted(self._erased_dropped().items()):
            dropped.add_metric([topic, ERASED], count)
        yield dropped
        uncounted = CounterMetricFamily(
            "mailstream_worker_uncounted_events",
            "Events left out of the deliverability figures (future: dated over 15 minutes "
            "after their receipt)",
            labels=["reason"],
        )
        for reason, count in sorted(self._uncounted().items()):
            uncounted.add_metric([reason], count)
        yield uncounted
