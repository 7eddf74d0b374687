"""The ingest service's metrics, exposed with prometheus_client, and the middleware that
counts every response the application gives.

Each service has a CollectorRegistry of its own (tests run several services in one process;
the global default registry would mix them up or refuse the second one), holding the
ingest's families plus the process_* and python_info metrics. The request path increments
labelled children cached per label values: a dict lookup and an increment, about a third of
the cost of `.labels(...)` on every request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mailstream.errors import ErrorKind

CONTENT_TYPE = CONTENT_TYPE_LATEST
WEBHOOK_PATH_PREFIX = "/webhooks/"
UNKNOWN_PROVIDER = "unknown"  # the label of webhook requests for a provider we do not have
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """The ingest's metric families in a registry of its own. `providers` get their
    per-provider series at 0 from the start; `kafka_reachable` is asked at each scrape."""

    def __init__(self, providers: Collection[str], kafka_reachable: Callable[[], bool]) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self._requests = Counter(
            "mailstream_ingest_requests_total",
            "Webhook requests by provider and HTTP status.",
            ("provider", "status"),
            registry=registry,
        )
        self._other_requests = Counter(
            "mailstream_ingest_other_requests_total",
            "Requests outside /webhooks/ by status.",
            ("status",),
            registry=registry,
        )
        duplicates = Counter(
            "mailstream_ingest_duplicates_total",
            "Webhooks answered from the dedupe window without a second write.",
            ("provider",),
            registry=registry,
        )
        reachable = Gauge(
            "mailstream_ingest_kafka_reachable",
            "0 while the producer knows no broker is reachable"
            " (webhooks are then answered 503 at once).",
            registry=registry,
        )
        reachable.set_function(lambda: 1.0 if kafka_reachable() else 0.0)
        stored_bytes = Counter(
            "mailstream_ingest_stored_bytes_total",
            "Webhook body bytes Kafka confirmed.",
            ("provider",),
            registry=registry,
        )
        self.in_flight = Gauge(  # inc() before produce(), dec() after
            "mailstream_ingest_produce_in_flight",
            "Webhooks awaiting Kafka's acknowledgement.",
            registry=registry,
        )
        self._produce_latency = Histogram(
            "mailstream_ingest_produce_latency_seconds",
            "From produce() to the broker's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._other_children: dict[int, Counter] = {}
        self._duplicates = duplicates
        self._duplicate_children = {name: duplicates.labels(name) for name in providers}
        self._stored_bytes = stored_bytes
        self._stored_children = {name: stored_bytes.labels(name) for name in providers}

    def count_request(self, provider: str, status: int) -> None:
        child = self._request_children.get((provider, status))
        if child is None:  # once per provider and status: both come from a small set
            child = self._request_children[provider, status] = self._requests.labels(
                provider, str(status)
            )
        child.inc()

    def count_other_request(self, status: int) -> None:
        child = self._other_children.get(status)
        if child is None:
            child = self._other_children[status] = self._other_requests.labels(str(status))
        child.inc()

    def count_stored(self, provider: str, size: int, seconds: float) -> None:
        child = self._stored_children.get(provider)
        if child is None:
            child = self._stored_children[provider] = self._stored_bytes.labels(provider)
        child.inc(size)
        self._produce_latency.observe(seconds)

    def count_duplicate(self, provider: str) -> None:
        child = self._duplicate_children.get(provider)
        if child is None:
            child = self._duplicate_children[provider] = self._duplicates.labels(provider)
        child.inc()

    def render(self) -> bytes:
        """The text exposition of CONTENT_TYPE."""
        return generate_latest(self.registry)


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
