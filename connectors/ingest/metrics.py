"""The ingest service's counters in the Prometheus text exposition format (version 0.0.4),
and the middleware that counts every response the application gives.

Written by hand: a few metric families do not justify a dependency, and updating a dict
entry is the cheapest thing the request path can do.
"""

from __future__ import annotations

import logging
import uuid
from bisect import bisect_left
from collections import Counter
from collections.abc import Collection

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailstream.errors import ErrorKind

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WEBHOOK_PATH_PREFIX = "/webhooks/"
UNKNOWN_PROVIDER = "unknown"  # the label of webhook requests for a provider we do not have
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
        self.other_requests: Counter[int] = Counter()
        self.stored_bytes: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.produce_latency = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0
        self.kafka_reachable = True

    def count_request(self, provider: str, status: int) -> None:
        self.requests[provider, status] += 1

    def count_other_request(self, status: int) -> None:
        self.other_requests[status] += 1

    def count_stored(self, provider: str, size: int, seconds: float) -> None:
        self.stored_bytes[provider] += size
        self.produce_latency.observe(seconds)

    def count_duplicate(self, provider: str) -> None:
        self.duplicates[provider] += 1

    def render(self) -> str:
        lines = [
            "# HELP mailstream_ingest_requests_total Webhook requests by provider and HTTP status.",
            "# TYPE mailstream_ingest_requests_total counter",
            *(
                f'mailstream_ingest_requests_total{{provider="{provider}",status="{status}"}} {n}'
                for (provider, status), n in sorted(self.requests.items())
            ),
            "# HELP mailstream_ingest_other_requests_total Requests outside /webhooks/ by status.",
            "# TYPE mailstream_ingest_other_requests_total counter",
            *(
                f'mailstream_ingest_other_requests_total{{status="{status}"}} {n}'
                for status, n in sorted(self.other_requests.items())
            ),
            "# HELP mailstream_ingest_duplicates_total Webhooks answered from the dedupe window"
            " without a second write.",
            "# TYPE mailstream_ingest_duplicates_total counter",
            *(
                f'mailstream_ingest_duplicates_total{{provider="{provider}"}} {n}'
                for provider, n in sorted(self.duplicates.items())
            ),
            "# HELP mailstream_ingest_kafka_reachable 0 while the producer knows no broker is"
            " reachable (webhooks are then answered 503 at once).",
            "# TYPE mailstream_ingest_kafka_reachable gauge",
            f"mailstream_ingest_kafka_reachable {int(self.kafka_reachable)}",
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


log = logging.getLogger("mailstream.ingest")


def counting_middleware(metrics: IngestMetrics, providers: Collection[str]) -> Middleware:
    """Counts every response of the application by status: webhooks by provider (404s for an
    unknown one and 405s included), other paths apart. A handler's unexpected exception is
    logged and answered 500 in JSON, without the traceback, and counted like the rest.
    (Requests that are not HTTP at all are answered 400 by aiohttp before any application.)"""

    def count(request: web.Request, status: int) -> None:
        if request.path.startswith(WEBHOOK_PATH_PREFIX):
            name = request.path[len(WEBHOOK_PATH_PREFIX) :]
            metrics.count_request(name if name in providers else UNKNOWN_PROVIDER, status)
        else:
            metrics.count_other_request(status)

    @web.middleware
    async def count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as refusal:  # the router's 404 and 405
            count(request, refusal.status)
            raise
        except ConnectionError:  # the client went away: nobody reads an answer
            raise
        except Exception:
            request_id = uuid.uuid4().hex
            log.exception("request %s: %s %s failed", request_id, request.method, request.path)
            response = internal_error(request_id)
        count(request, response.status)
        return response

    return count_responses


def internal_error(request_id: str) -> web.Response:
    payload = {
        "status": "failed",
        "error": ErrorKind.INTERNAL_ERROR,
        "reason": "the ingest failed to handle the request; retry later",
        "request_id": request_id,
    }
    return web.Response(
        status=500,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )
