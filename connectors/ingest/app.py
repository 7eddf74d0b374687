"""The webhook front door: POST /webhooks/{provider} lands the body on email.raw.<provider>.

A webhook is answered 200 only after Kafka confirmed the write, so a provider retries
everything we did not store (503 with Retry-After while Kafka is unreachable). Bodies are
stored byte for byte, even when they are not JSON: the raw topic is the source of truth and
the normalizer dead-letters what it cannot read. Verification and the message key come from
the provider modules; this layer only maps their answers to HTTP.

Hostile input is answered, never a traceback: bodies above the limit 413, undecodable
Content-Encoding 400, a body that does not arrive within the read deadline 408 (and the
connection is closed), headers that do not within it a closed connection. A body stored
within the dedupe window is answered 200 again without a second write. Broker error text
goes to the log, never to the caller.

A provider whose signature covers a one-time token instead of the body (Mailgun) names the
token (`Provider.replay_token`); once a body with that token is stored, the token is refused
(401) on any other body for twice the provider's freshness window (a timestamp may lie that
far ahead of the clock), so a captured signature cannot carry a forged event. The same body
again is a retry, answered by the dedupe as any other (with the dedupe off, or after its
window, a reused token is refused even then: the ingest keeps tokens, not bodies).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from mailstream.connectors.base import Provider
from mailstream.connectors.ingest.dedupe import RecentWebhooks, WebhookDigest, webhook_digest
from mailstream.connectors.ingest.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mailstream.connectors.ingest.metrics import IngestMetrics, counting_middleware
from mailstream.connectors.ingest.producer import (
    ALL_BROKERS_DOWN,
    AsyncProducer,
    KafkaHeaders,
    ProduceError,
    producer_config,
)
from mailstream.connectors.registry import PROVIDERS
from mailstream.errors import ErrorKind, MailstreamError, SignatureError
from mailstream.settings import ENV_PREFIX, MAX_KEY_BYTES, ProviderAuth, Settings, SettingsError
from mailstream.topics import TopicNames

RETRY_AFTER_SECONDS = "5"
READINESS_CACHE_SECONDS = 1.0
KAFKA_DID_NOT_CONFIRM = "Kafka did not confirm the write; retry later"
REPLAYED_SIGNATURE = (
    "the signature's one-time token was already used by a stored request: a replayed signature"
)

log = logging.getLogger("mailstream.ingest")


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


class RequestRefused(MailstreamError):
    """A webhook request answered with `status` before its content is looked at;
    `close_connection` when the rest of the body is not worth reading (or cannot be read)."""

    default_kind = ErrorKind.BAD_REQUEST

    def __init__(
        self,
        status: int,
        message: str,
        kind: ErrorKind | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message, kind)
        self.status = status
        self.close_connection = close_connection


class Readiness:
    """Is Kafka answering metadata requests and do the raw topics exist? The answer is
    cached for READINESS_CACHE_SECONDS so frequent probes cost one request per second.
    Kafka's own error text is logged (once per change), not answered."""

    def __init__(self, producer: AsyncProducer, topics: list[str]) -> None:
        self._producer = producer
        self._topics = topics
        self._lock = asyncio.Lock()
        self._problem: str | None = None
        self._expires = 0.0

    async def problem(self) -> str | None:
        async with self._lock:
            if time.monotonic() >= self._expires:
                found = await self._probe()
                problem = found[0] if found else None
                if found is not None and problem != self._problem:
                    log.warning("not ready: %s", found[1])
                self._problem = problem
                self._expires = time.monotonic() + READINESS_CACHE_SECONDS
            return self._problem

    async def _probe(self) -> tuple[str, str] | None:
        """None when ready, else (the answer's reason, the detail for the log)."""
        if self._producer.fatal_error is not None:
            return (
                "the Kafka producer failed",
                f"the Kafka producer failed: {self._producer.fatal_error}",
            )
        try:
            existing = await self._producer.metadata_topics()
        except ProduceError as error:
            return "Kafka is unreachable", f"Kafka is unreachable: {error}"
        missing = [topic for topic in self._topics if topic not in existing]
        if not missing:
            return None
        problem = f"missing topics: {', '.join(missing)}"
        return problem, problem


class IngestService:
    """The request handlers and the state they share."""

    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        ingest = settings.ingest
        self.routes = build_routes(settings, providers)
        self.max_body_bytes = ingest.max_body_bytes
        self.max_record_bytes = ingest.max_record_bytes
        self.read_timeout_seconds = ingest.read_timeout_seconds
        timeout = ingest.produce_timeout_seconds
        config = producer_config(
            settings.kafka.librdkafka_config(), timeout, max_record_bytes=ingest.max_record_bytes
        )
        self.producer = AsyncProducer(config, timeout)
        self.readiness = Readiness(self.producer, [route.topic for route in self.routes.values()])
        self.metrics = IngestMetrics(
            self.routes, kafka_reachable=lambda: self.producer.unreachable is None
        )
        self.recent = RecentWebhooks(ingest.dedupe_window_seconds, ingest.dedupe_max_entries)
        # Per provider, the one-time tokens of stored requests, keyed (provider, token).
        self.used_tokens = {
            route.provider.name: RecentWebhooks(
                2 * route.config.max_age_seconds, ingest.dedupe_max_entries
            )
            for route in self.routes.values()
        }
        # Tokens of bodies being written now, with the writing request's id.
        self._writing_tokens: dict[WebhookDigest, str] = {}
        # Bodies being written now: a copy arriving meanwhile waits for the outcome.
        self._writing: dict[WebhookDigest, asyncio.Event] = {}

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
            return self._refuse(404, ErrorKind.UNKNOWN_PROVIDER, reason, request_id)
        try:
            body = await self._read_body(request)
        except RequestRefused as refusal:
            response = self._refuse(refusal.status, refusal.kind, refusal.message, request_id)
            if refusal.close_connection:
                await _answer_and_close(request, response)
            return response
        now = time.time()
        verify = route.provider.verify
        try:
            if route.provider.verify_blocks:
                await asyncio.to_thread(verify, body, request.headers, route.config, now)
            else:
                verify(body, request.headers, route.config, now)
        except SignatureError as error:
            return self._refuse(401, error.kind, error.message, request_id)
        if not self.recent.enabled:
            response = await self._store(route, body, request, request_id, now, None)
        else:
            response = await self._store_once(route, body, request, request_id, now)
        if response.status == 200:
            await self._answer_subscription(route, body, request_id)
        return response

    async def _answer_subscription(self, route: Route, body: bytes, request_id: str) -> None:
        """A stored request asking to confirm a subscription: confirmed where the provider's
        settings allow it, logged with its URL either way."""
        subscription = route.provider.subscription_request(body, route.config)
        if subscription is None:
            return
        name = route.provider.name
        if subscription.confirm is None:
            log.warning(
                "request %s: %s asks to confirm a subscription, not confirmed (the settings "
                "do not allow it): visit %s to confirm it",
                request_id,
                name,
                subscription.url,
            )
            return
        try:
            await asyncio.to_thread(subscription.confirm)
        except (OSError, ValueError) as error:
            log.error(
                "request %s: confirming the %s subscription at %s failed: %s",
                request_id,
                name,
                subscription.url,
                error,
            )
        else:
            log.info(
                "request %s: confirmed the %s subscription at %s",
                request_id,
                name,
                subscription.url,
            )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, read within the read deadline; raises RequestRefused. The declared
        Content-Length is checked before reading, `client_max_size` while reading (chunked
        and compressed bodies: the limit applies to the decoded bytes)."""
        too_large = RequestRefused(
            413, f"the body exceeds {self.max_body_bytes} bytes", ErrorKind.TOO_LARGE
        )
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise too_large
        try:
            async with asyncio.timeout(self.read_timeout_seconds):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            reason = f"the body did not arrive within {self.read_timeout_seconds:g} s"
            raise RequestRefused(
                408, reason, ErrorKind.REQUEST_TIMEOUT, close_connection=True
            ) from None
        except web.RequestPayloadError:
            reason = "the body cannot be read: not valid for its Content-Encoding, or broken chunks"
            raise RequestRefused(400, reason, close_connection=True) from None

    async def _store_once(
        self, route: Route, body: bytes, request: web.Request, request_id: str, now: float
    ) -> web.Response:
        """`_store`, unless the same body was stored within the dedupe window: then 200 with
        the first request's id. Copies arriving together wait for the first one's outcome, so
        they are not written twice either; after a failed write the next copy writes."""
        name = route.provider.name
        digest = webhook_digest(name, body)
        while (writing := self._writing.get(digest)) is not None:
            await writing.wait()
        first_request_id = self.recent.first_request_id(digest)
        if first_request_id is not None:
            self.metrics.count_duplicate(name)
            payload = {"status": "duplicate", "request_id": first_request_id}
            return self._answer(200, payload, first_request_id)
        self._writing[digest] = written = asyncio.Event()
        try:
            return await self._store(route, body, request, request_id, now, digest)
        finally:
            del self._writing[digest]
            written.set()

    async def _store(
        self,
        route: Route,
        body: bytes,
        request: web.Request,
        request_id: str,
        now: float,
        digest: WebhookDigest | None,
    ) -> web.Response:
        headers: KafkaHeaders = [
            ("mailstream.provider", route.name_header),
            ("mailstream.received_at", str(int(now * 1000)).encode()),
            ("mailstream.request_id", request_id.encode()),
            ("content-type", request.headers.get("Content-Type", "").encode()),
        ]
        name = route.provider.name
        token = route.provider.replay_token(body)
        token_key = (name, token) if token is not None else None
        if token_key is not None:
            first = self.used_tokens[name].first_request_id(token_key)
            first = first or self._writing_tokens.get(token_key)
            if first is not None:
                log.warning(
                    "request %s: refused the one-time token that request %s used", request_id, first
                )
                return self._refuse(
                    401, ErrorKind.INVALID_SIGNATURE, REPLAYED_SIGNATURE, request_id
                )
            self._writing_tokens[token_key] = request_id
        try:
            await self._produce(route, body, headers)
        except ProduceError as error:
            return self._kafka_refusal(route, error, request_id)
        finally:
            if token_key is not None:
                del self._writing_tokens[token_key]
        if digest is not None:
            self.recent.remember(digest, request_id)
        if token_key is not None:
            self.used_tokens[name].remember(token_key, request_id)
        return self._answer(200, {"status": "stored", "request_id": request_id}, request_id)

    async def _produce(self, route: Route, body: bytes, headers: KafkaHeaders) -> None:
        key = route.provider.message_key(body)
        if key is not None and len(key) > MAX_KEY_BYTES:
            key = None  # keeps the record within max_record_bytes
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.producer.produce(route.topic, key, body, headers)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.count_stored(route.provider.name, len(body), time.perf_counter() - started)

    def _kafka_refusal(self, route: Route, error: ProduceError, request_id: str) -> web.Response:
        if error.kind is ErrorKind.TOO_LARGE:
            log.error(
                "request %s: Kafka refused the record as too large (%s); the topic %s needs "
                "max.message.bytes >= %d (`mailstream topics create` sets it on new topics)",
                request_id,
                error,
                route.topic,
                self.max_record_bytes,
            )
            reason = "Kafka refused the record as too large"
            return self._refuse(413, ErrorKind.TOO_LARGE, reason, request_id)
        if error.reason != ALL_BROKERS_DOWN:  # the producer logs an outage once
            log.warning("request %s: Kafka did not confirm the write: %s", request_id, error)
        retry = {"Retry-After": RETRY_AFTER_SECONDS}
        return self._refuse(503, error.kind, KAFKA_DID_NOT_CONFIRM, request_id, retry)

    def _refuse(
        self,
        status: int,
        error: ErrorKind,
        reason: str,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        payload = {"status": "refused", "error": error, "reason": reason, "request_id": request_id}
        return self._answer(status, payload, request_id, headers)

    def _answer(
        self,
        status: int,
        payload: Mapping[str, Any],
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers={"X-Request-Id": request_id, **(headers or {})},
        )

    async def healthz(self, _request: web.Request) -> web.Response:
        if self.producer.fatal_error is not None:  # its text is in the log
            return _json(503, {"status": "failed", "reason": "the Kafka producer failed"})
        return _json(200, {"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problem = await self.readiness.problem()
        if problem is not None:
            return _json(503, {"status": "unready", "reason": problem})
        return _json(200, {"status": "ready"})

    async def render_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Sends `response`, then closes the connection at once: aiohttp would otherwise keep it
    for its lingering time, reading the rest of a body that is not coming (or, when the body
    is broken, fail on it again and log a traceback)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


INGEST_SERVICE = web.AppKey("ingest_service", IngestService)


def _json(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def create_app(
    settings: Settings, providers: Mapping[str, Provider] = PROVIDERS
) -> web.Application:
    """The aiohttp application; its producer starts with the app and is flushed on cleanup."""
    service = IngestService(settings, providers)
    read_timeout = settings.ingest.read_timeout_seconds
    app = web.Application(
        client_max_size=settings.ingest.max_body_bytes,
        middlewares=[counting_middleware(service.metrics, service.routes)],
        handler_args={
            # aiohttp's keep-alive timer starts with the connection (and again after each
            # answer) and closes it if the request's headers are not complete by then: the
            # header deadline. Idle keep-alive connections close after it too.
            "keepalive_timeout": read_timeout,
            # how long the rest of an unread body (a refused one) is read and discarded
            "lingering_time": read_timeout,
        },
    )
    app[INGEST_SERVICE] = service
    app.cleanup_ctx.append(service.producer_lifetime)
    app.router.add_post("/webhooks/{provider}", service.webhook)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/readyz", service.readyz)
    app.router.add_get("/metrics", service.render_metrics)
    return app
