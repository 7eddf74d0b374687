"""The webhook front door: POST /webhooks/{provider} lands the body on email.raw.<provider>.

A webhook is answered 200 only after Kafka confirmed the write, so a provider retries
everything we did not store (503 with Retry-After while Kafka is unreachable). Bodies are
stored byte for byte, even when they are not JSON: the raw topic is the source of truth and
the normalizer dead-letters what it cannot read. Verification and the message key come from
the provider modules; this layer only maps their answers to HTTP.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from mailstream.connectors.base import Provider
from mailstream.connectors.ingest.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mailstream.connectors.ingest.metrics import IngestMetrics
from mailstream.connectors.ingest.producer import (
    AsyncProducer,
    KafkaHeaders,
    ProduceError,
    producer_config,
)
from mailstream.connectors.registry import PROVIDERS
from mailstream.errors import ErrorKind, SignatureError
from mailstream.settings import ENV_PREFIX, ProviderAuth, Settings, SettingsError
from mailstream.topics import TopicNames

RETRY_AFTER_SECONDS = "5"
READINESS_CACHE_SECONDS = 1.0
UNKNOWN_PROVIDER = "unknown"  # the metrics label of requests for a provider we do not have


@dataclass(frozen=True, slots=True)
class Route:
    """Everything a webhook of one provider needs, computed once at start-up."""

    provider: Provider
    config: ProviderAuth
    topic: str
    name_header: bytes


def build_routes(settings: Settings, providers: Mapping[str, Provider]) -> dict[str, Route]:
    unknown = sorted(set(settings.ingest.providers) - set(providers))
    if unknown:
        raise SettingsError(
            f"{ENV_PREFIX}INGEST_{unknown[0].upper()}_* configures no known provider; "
            f"known: {', '.join(sorted(providers))}"
        )
    names = TopicNames(settings.topic_prefix)
    return {
        name: Route(provider, settings.ingest.auth(name), names.raw(name), name.encode())
        for name, provider in providers.items()
    }


class Readiness:
    """Is Kafka answering metadata requests and do the raw topics exist? The answer is
    cached for READINESS_CACHE_SECONDS so frequent probes cost one request per second."""

    def __init__(self, producer: AsyncProducer, topics: list[str]) -> None:
        self._producer = producer
        self._topics = topics
        self._lock = asyncio.Lock()
        self._problem: str | None = None
        self._expires = 0.0

    async def problem(self) -> str | None:
        async with self._lock:
            if time.monotonic() >= self._expires:
                self._problem = await self._probe()
                self._expires = time.monotonic() + READINESS_CACHE_SECONDS
            return self._problem

    async def _probe(self) -> str | None:
        if self._producer.fatal_error is not None:
            return f"the Kafka producer failed: {self._producer.fatal_error}"
        try:
            existing = await self._producer.metadata_topics()
        except ProduceError as error:
            return f"Kafka is unreachable: {error}"
        missing = [topic for topic in self._topics if topic not in existing]
        return f"missing topics: {', '.join(missing)}" if missing else None


class IngestService:
    """The request handlers and the state they share."""

    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.routes = build_routes(settings, providers)
        self.max_body_bytes = settings.ingest.max_body_bytes
        timeout = settings.ingest.produce_timeout_seconds
        connection = settings.kafka.librdkafka_config()
        self.producer = AsyncProducer(producer_config(connection, timeout), timeout)
        self.readiness = Readiness(self.producer, [route.topic for route in self.routes.values()])
        self.metrics = IngestMetrics()

    async def producer_lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        self.producer.start()
        yield
        await self.producer.close()

    async def webhook(self, request: web.Request) -> web.Response:
        request_id = uuid.uuid4().hex
        name = request.match_info["provider"]
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes))
            reason = f"no provider named {name!r} (known: {known})"
            return self._refuse(
                UNKNOWN_PROVIDER, 404, ErrorKind.UNKNOWN_PROVIDER, reason, request_id
            )
        body = await self._read_body(request)
        if body is None:
            reason = f"the body exceeds {self.max_body_bytes} bytes"
            return self._refuse(name, 413, ErrorKind.TOO_LARGE, reason, request_id)
        now = time.time()
        try:
            route.provider.verify(body, request.headers, route.config, now)
        except SignatureError as error:
            return self._refuse(name, 401, error.kind, error.message, request_id)
        return await self._store(route, body, request, request_id, now)

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it is larger than allowed: the declared Content-Length
        is checked before reading, `client_max_size` while reading (chunked bodies)."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return None
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return None

    async def _store(
        self, route: Route, body: bytes, request: web.Request, request_id: str, now: float
    ) -> web.Response:
        headers: KafkaHeaders = [
            ("mailstream.provider", route.name_header),
            ("mailstream.received_at", str(int(now * 1000)).encode()),
            ("mailstream.request_id", request_id.encode()),
            ("content-type", request.headers.get("Content-Type", "").encode()),
        ]
        name = route.provider.name
        try:
            await self._produce(route, body, headers)
        except ProduceError as error:
            reason = f"Kafka did not confirm the write ({error}); retry later"
            retry = {"Retry-After": RETRY_AFTER_SECONDS}
            return self._refuse(name, 503, error.kind, reason, request_id, retry)
        return self._answer(name, 200, {"status": "stored", "request_id": request_id}, request_id)

    async def _produce(self, route: Route, body: bytes, headers: KafkaHeaders) -> None:
        key = route.provider.message_key(body)
        started = time.perf_counter()
        self.metrics.in_flight += 1
        try:
            await self.producer.produce(route.topic, key, body, headers)
        finally:
            self.metrics.in_flight -= 1
        self.metrics.count_stored(route.provider.name, len(body), time.perf_counter() - started)

    def _refuse(
        self,
        provider: str,
        status: int,
        error: ErrorKind,
        reason: str,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        payload = {"status": "refused", "error": error, "reason": reason, "request_id": request_id}
        return self._answer(provider, status, payload, request_id, headers)

    def _answer(
        self,
        provider: str,
        status: int,
        payload: Mapping[str, Any],
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.metrics.count_request(provider, status)
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers={"X-Request-Id": request_id, **(headers or {})},
        )

    async def healthz(self, _request: web.Request) -> web.Response:
        if self.producer.fatal_error is not None:
            return _json(503, {"status": "failed", "reason": self.producer.fatal_error})
        return _json(200, {"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problem = await self.readiness.problem()
        if problem is not None:
            return _json(503, {"status": "unready", "reason": problem})
        return _json(200, {"status": "ready"})

    async def render_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def _json(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def create_app(
    settings: Settings, providers: Mapping[str, Provider] = PROVIDERS
) -> web.Application:
    """The aiohttp application; its producer starts with the app and is flushed on cleanup."""
    service = IngestService(settings, providers)
    app = web.Application(client_max_size=settings.ingest.max_body_bytes)
    app.cleanup_ctx.append(service.producer_lifetime)
    app.router.add_post("/webhooks/{provider}", service.webhook)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/readyz", service.readyz)
    app.router.add_get("/metrics", service.render_metrics)
    return app
