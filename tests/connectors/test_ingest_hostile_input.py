"""Hostile requests to the ingest, without a broker: oversized headers, broken compression,
slow clients, handler failures and replays are answered (or cut off) as documented, and every
answer is counted. Kafka writes go to a fake; tests/integration/test_ingest.py has the real ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailstream.connectors.base import WebhookProvider
from mailstream.connectors.ingest.app import INGEST_SERVICE, IngestService, create_app
from mailstream.connectors.ingest.producer import AsyncProducer, KafkaHeaders, ProduceError
from mailstream.connectors.registry import PROVIDERS
from mailstream.errors import ErrorKind
from mailstream.settings import IngestSettings, KafkaSettings, ProviderAuth, Settings
from tests.connectors.test_ingest_metrics import sample

Client = TestClient[web.Request, web.Application]
HOST = "127.0.0.1"
READ_TIMEOUT = 1.0
CLOSE_MARGIN = 0.8  # scheduling slack on a busy machine; aiohttp's lingering would add 1 s
SETTINGS = Settings(
    kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),  # nobody listens: writes are faked
    ingest=IngestSettings(
        providers={
            "mailbot": ProviderAuth(secrets=("mailbot-secret",)),
            "maileroo": ProviderAuth(secrets=("maileroo-secret",)),
        },
        read_timeout_seconds=READ_TIMEOUT,
        produce_timeout_seconds=1.0,
    ),
)
BODY = b'{"event_type":"delivered","message_id":"ml-1","recipient":"ana@example.com"}'


class FakeWrites:
    """Stands in for AsyncProducer.produce: fails with the queued errors first, then stores."""

    def __init__(self, failures: list[ProduceError] | None = None) -> None:
        self.failures = failures or []
        self.values: list[bytes] = []
        self.before_ack: asyncio.Event | None = None  # when set, a write waits for it

    async def produce(
        self, _topic: str, _key: bytes | None, value: bytes, _headers: KafkaHeaders
    ) -> None:
        self.values.append(value)
        if self.failures:
            raise self.failures.pop(0)
        if self.before_ack is not None:
            await self.before_ack.wait()


@pytest.fixture(autouse=True)
def no_outage_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listens on the configured port; these tests are not about outages."""
    monkeypatch.setattr(AsyncProducer, "_on_error", lambda _self, _error: None)


async def serve(
    providers: Mapping[str, WebhookProvider] | None = None, settings: Settings = SETTINGS
) -> tuple[TestClient[web.Request, web.Application], IngestService]:
    app = create_app(settings, {**PROVIDERS, **(providers or {})})
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client, app[INGEST_SERVICE]


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Client, FakeWrites]]:
    client, service = await serve()
    writes = FakeWrites()
    monkeypatch.setattr(service.producer, "produce", writes.produce)
    try:
        yield client, writes
    finally:
        await client.close()


def signed(provider: str, body: bytes) -> dict[str, str]:
    return PROVIDERS[provider].sign(body, SETTINGS.ingest.auth(provider), time.time())


async def metrics_text(client: Client) -> str:
    return await (await client.get("/metrics")).text()


async def requests_counted(client: Client, provider: str, status: int) -> float | None:
    text = await metrics_text(client)
    labels = {"provider": provider, "status": str(status)}
    return sample(text, "mailstream_ingest_requests_total", **labels)


# --- Headers and bodies that used to be 500s ------------------------------------------------


@pytest.mark.parametrize("digits", [13, 400, 5000])
async def test_an_absurd_mailbot_timestamp_is_401_with_the_reason(
    served: tuple[Client, FakeWrites], digits: int
) -> None:
    client, writes = served
    headers = {**signed("mailbot", BODY), "X-Mailbot-Timestamp": "9" * digits}
    response = await client.post("/webhooks/mailbot", data=BODY, headers=headers)
    assert response.status == 401, await response.text()
    answer = await response.json()
    assert answer["error"] == ErrorKind.INVALID_SIGNATURE
    assert "unix seconds" in answer["reason"]
    assert writes.values == []
    assert await requests_counted(client, "mailbot", 401) == 1


async def test_an_overlong_credential_header_is_401_before_it_is_decoded(
    served: tuple[Client, FakeWrites],
) -> None:
    client, _ = served
    headers = {"X-Maileroo-Signature": "a" * 5000}
    response = await client.post("/webhooks/maileroo", data=BODY, headers=headers)
    assert response.status == 401
    assert "longer than 1024 characters" in (await response.json())["reason"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_valid_for_its_content_encoding_is_400(
    served: tuple[Client, FakeWrites], encoding: str
) -> None:
    client, writes = served
    headers = {**signed("maileroo", BODY), "Content-Encoding": encoding}
    response = await client.post(
        "/webhooks/maileroo", data=b"plainly not compressed", headers=headers
    )
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["error"] == ErrorKind.BAD_REQUEST
    assert "Content-Encoding" in answer["reason"]
    assert writes.values == []
    assert await requests_counted(client, "maileroo", 400) == 1


async def test_an_unexpected_failure_is_a_counted_json_500_without_a_traceback() -> None:
    def broken_verify(*_args: object) -> None:
        raise RuntimeError("a bug with a secret-looking detail")

    broken = replace(PROVIDERS["maileroo"], name="broken", verify_request=broken_verify)
    client, _ = await serve({"broken": broken})
    try:
        response = await client.post("/webhooks/broken", data=BODY)
        assert response.status == 500
        text = await response.text()
        assert "Traceback" not in text and "secret-looking" not in text
        answer = await response.json()
        assert answer["error"] == ErrorKind.INTERNAL_ERROR
        assert answer["request_id"] == response.headers["X-Request-Id"]
        assert await requests_counted(client, "broken", 500) == 1
    finally:
        await client.close()


async def test_every_answer_is_counted_by_the_middleware(
    served: tuple[Client, FakeWrites],
) -> None:
    client, _ = served
    assert (await client.post("/webhooks/nosuchprovider", data=b"{}")).status == 404
    assert (await client.get("/webhooks/mailbot")).status == 405
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/no-such-page")).status == 404
    text = await metrics_text(client)
    requests = "mailstream_ingest_requests_total"
    assert sample(text, requests, provider="unknown", status="404") == 1
    assert sample(text, requests, provider="mailbot", status="405") == 1
    assert sample(text, "mailstream_ingest_other_requests_total", status="200") == 1
    assert sample(text, "mailstream_ingest_other_requests_total", status="404") == 1


# --- Kafka's refusals, as the caller sees them ----------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (
            ProduceError(
                "MSG_SIZE_TOO_LARGE", "Broker: Message size too large", ErrorKind.TOO_LARGE
            ),
            413,
            "too_large",
        ),
        (ProduceError("_MSG_TIMED_OUT", "Local: Message timed out"), 503, "kafka_unavailable"),
    ],
)
async def test_kafka_refusals_are_answered_without_the_broker_text(
    served: tuple[Client, FakeWrites], failure: ProduceError, status: int, error: str
) -> None:
    client, writes = served
    writes.failures.append(failure)
    response = await client.post("/webhooks/maileroo", data=BODY, headers=signed("maileroo", BODY))
    assert response.status == status
    text = await response.text()
    assert failure.message not in text and failure.reason not in text
    assert (await response.json())["error"] == error


# --- Replays --------------------------------------------------------------------------------


async def test_a_failed_write_is_retryable_and_a_stored_body_is_not_written_twice(
    served: tuple[Client, FakeWrites],
) -> None:
    client, writes = served
    writes.failures.append(ProduceError("_MSG_TIMED_OUT", "Local: Message timed out"))
    headers = signed("maileroo", BODY)
    answers = [
        await client.post("/webhooks/maileroo", data=BODY, headers=headers) for _ in range(3)
    ]
    assert [a.status for a in answers] == [503, 200, 200]
    stored, duplicate = [await a.json() for a in answers[1:]]
    assert stored["status"] == "stored"
    assert duplicate == {"status": "duplicate", "request_id": stored["request_id"]}
    assert writes.values == [BODY, BODY], "the failed write and the retry; not the replay"
    duplicates = sample(
        await metrics_text(client), "mailstream_ingest_duplicates_total", provider="maileroo"
    )
    assert duplicates == 1


async def test_copies_arriving_together_are_written_once(monkeypatch: pytest.MonkeyPatch) -> None:
    verified = 0
    maileroo = PROVIDERS["maileroo"]

    def counting_verify(*args: object) -> None:
        nonlocal verified
        maileroo.verify_request(*args)  # type: ignore[arg-type]
        verified += 1

    client, service = await serve({"maileroo": replace(maileroo, verify_request=counting_verify)})
    writes = FakeWrites()
    writes.before_ack = asyncio.Event()
    monkeypatch.setattr(service.producer, "produce", writes.produce)
    try:
        headers = signed("maileroo", BODY)
        posts = [
            asyncio.ensure_future(client.post("/webhooks/maileroo", data=BODY, headers=headers))
            for _ in range(2)
        ]
        deadline = time.monotonic() + 5
        while verified < 2:  # the second copy went on to wait (or to write) in the same step
            assert time.monotonic() < deadline, "the copies did not arrive"
            await asyncio.sleep(0.01)
        writes.before_ack.set()
        answers = [await (await post).json() for post in posts]
    finally:
        await client.close()
    assert writes.values == [BODY]
    assert sorted(answer["status"] for answer in answers) == ["duplicate", "stored"]
    assert answers[0]["request_id"] == answers[1]["request_id"]


async def test_a_zero_window_writes_every_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = replace(SETTINGS, ingest=replace(SETTINGS.ingest, dedupe_window_seconds=0))
    client, service = await serve(settings=settings)
    writes = FakeWrites()
    monkeypatch.setattr(service.producer, "produce", writes.produce)
    try:
        for _ in range(2):
            response = await client.post(
                "/webhooks/maileroo", data=BODY, headers=signed("maileroo", BODY)
            )
            assert (await response.json())["status"] == "stored"
    finally:
        await client.close()
    assert writes.values == [BODY, BODY]


# --- Slow clients, on a raw socket ----------------------------------------------------------


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Did the server close the connection within `seconds`? (It must not answer.)"""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", f"the server answered {data!r}"
    return True


async def test_a_connection_that_sends_nothing_is_closed_at_the_read_deadline(
    served: tuple[Client, FakeWrites],
) -> None:
    client, _ = served
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(HOST, client.server.port)
    started = time.monotonic()
    try:
        assert await closed_within(reader, READ_TIMEOUT + CLOSE_MARGIN)
        assert time.monotonic() - started >= READ_TIMEOUT * 0.9
    finally:
        writer.close()


async def test_headers_sent_slowly_are_cut_off_at_the_read_deadline(
    served: tuple[Client, FakeWrites],
) -> None:
    client, _ = served
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(HOST, client.server.port)
    request = b"POST /webhooks/maileroo HTTP/1.1\r\nHost: ingest\r\nX-Slow: " + b"s" * 200
    started = time.monotonic()
    closed = False
    try:
        for byte in request:  # one byte every 50 ms: the headers would take 13 s
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
            if closed or await closed_within(reader, 0.05):
                closed = True
                break
            assert time.monotonic() - started < READ_TIMEOUT + CLOSE_MARGIN, "still open"
    finally:
        writer.close()
    assert closed
    assert time.monotonic() - started >= READ_TIMEOUT * 0.9


async def test_a_body_that_stops_coming_gets_408_and_the_connection_is_closed(
    served: tuple[Client, FakeWrites],
) -> None:
    client, writes = served
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(HOST, client.server.port)
    writer.write(
        b"POST /webhooks/maileroo HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"event_type": '
    )
    await writer.drain()
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(), READ_TIMEOUT + CLOSE_MARGIN)  # to EOF
    finally:
        writer.close()
    assert time.monotonic() - started >= READ_TIMEOUT * 0.9
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error":"request_timeout"' in answer
    assert writes.values == []
    assert await requests_counted(client, "maileroo", 408) == 1
