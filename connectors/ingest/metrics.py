"""The ingest service's counters in the Prometheus text exposition format (version 0.0.4).

Written by hand: three metric families do not justify a dependency, and updating a dict
entry is the cheapest thing the request path can do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per upper bound; rendered cumulatively as Prometheus expects."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def render(self, name: str) -> list[str]:
        lines = []
        cumulative = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f"{name}_sum {self.total!r}")
        lines.append(f"{name}_count {cumulative}")
        return lines


class IngestMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.stored_bytes: Counter[str] = Counter()
        self.produce_latency = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0

    def count_request(self, provider: str, status: int) -> None:
        self.requests[provider, status] += 1

    def count_stored(self, provider: str, size: int, seconds: float) -> None:
        self.stored_bytes[provider] += size
        self.produce_latency.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP mailstream_ingest_requests_total Webhook requests by provider and HTTP status.",
            "# TYPE mailstream_ingest_requests_total counter",
            *(
                f'mailstream_ingest_requests_total{{provider="{provider}",status="{status}"}} {n}'
                for (provider, status), n in sorted(self.requests.items())
            ),
            "# HELP mailstream_ingest_stored_bytes_total Webhook body bytes Kafka confirmed.",
            "# TYPE mailstream_ingest_stored_bytes_total counter",
            *(
                f'mailstream_ingest_stored_bytes_total{{provider="{provider}"}} {n}'
                for provider, n in sorted(self.stored_bytes.items())
            ),
            "# HELP mailstream_ingest_produce_in_flight Webhooks awaiting Kafka's acknowledgement.",
            "# TYPE mailstream_ingest_produce_in_flight gauge",
            f"mailstream_ingest_produce_in_flight {self.in_flight}",
            "# HELP mailstream_ingest_produce_latency_seconds From produce() to the broker's"
            " acknowledgement.",
            "# TYPE mailstream_ingest_produce_latency_seconds histogram",
            *self.produce_latency.render("mailstream_ingest_produce_latency_seconds"),
        ]
        return "\n".join(lines) + "\n"
