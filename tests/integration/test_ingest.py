"""The webhook ingest service against a real broker: what is answered 200 is on the raw topic
byte for byte, what is refused leaves no trace, and a dead broker means 503, never a loss."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CONTENT_TYPE_LATEST

from mailstream.connectors.base import Sample
from mailstream.connectors.ingest.app import create_app
from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.broker import LocalBroker, free_port
from mailstream.settings import (
    IngestSettings,
    KafkaSettings,
    ProviderAuth,
    Settings,
)
from mailstream.topics import TopicNames, TopicSpec, create_topics, topic_specs
from tests.connectors.test_ingest_metrics import INGEST_FAMILIES, families, sample

pytestmark = pytest.mark.kafka

Client = TestClient[web.Request, web.Application]
LEADER_PENDING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)

INGEST = IngestSettings(
    providers={
        "mailbot": ProviderAuth(secrets=("mailbot-current", "mailbot-previous")),
        "maileroo": ProviderAuth(secrets=("maileroo-secret",)),
        "inboxroad": ProviderAuth(secrets=("inboxroad-secret",)),
    },
    max_body_bytes=4096,
    produce_timeout_seconds=2.0,
)
# Bodies as a provider sends them (spacing, a trailing newline, UTF-8), and the key each gives.
PAYLOADS: dict[str, tuple[bytes, bytes]] = {
    "mailbot": (
        b'{"event_type": "message.delivered", "message_id": "<mb-1@mail.example>",\n'
        b' "created_at": 1795000000, "to": "Zo\xc3\xab <zoe@example.com>"}\n',
        b"mb-1@mail.example",
    ),
    "maileroo": (
        b'{"event_type":"delivered","message_id":"ml-1","event_time":1795000000,'
        b'"recipient":"ana@example.com"}',
        b"ml-1",
    ),
    "inboxroad": (
        b'{"type": "d", "header_Message-Id": "<ir-1@mta.example>", "rcpt": "bo@example.com",'
        b' "timeLogged": "2026-11-23 10:00:00"}',
        b"ir-1@mta.example",
    ),
}


# --- Fixtures and helpers ---------------------------------------------------------------------


def raw_topics(settings: Settings) -> list[str]:
    names = TopicNames(settings.topic_prefix)
    return [names.raw(provider) for provider in PROVIDERS]


def raw_topic_specs(settings: Settings) -> list[TopicSpec]:
    wanted = set(raw_topics(settings))
    return [s for s in topic_specs(settings, PROVIDERS) if s.name in wanted]


def create_raw_topics(settings: Settings) -> None:
    create_topics(settings, raw_topic_specs(settings))


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    configured = replace(settings, ingest=INGEST)
    create_raw_topics(configured)
    return configured


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@pytest.fixture
async def client(ingest_settings: Settings) -> AsyncIterator[Client]:
    async with serving(ingest_settings) as client:
        yield client


def signed_headers(
    settings: Settings, provider: str, body: bytes, **overrides: object
) -> dict[str, str]:
    config = replace(settings.ingest.auth(provider), **overrides)
    headers = PROVIDERS[provider].sign(body, config, time.time())
    return {"Content-Type": "application/json", **headers}


def read_topic(settings: Settings, topic: str, timeout: float = 20) -> list[Message]:
    """Every record of `topic`, read up to the end offsets it has now."""
    consumer = Consumer(
        {**settings.kafka.librdkafka_config(), "group.id": f"read-{uuid.uuid4()}", "log_level": 0}
    )
    try:
        ends = end_offsets(consumer, topic)
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0]
        )
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < sum(ends.values()):
            assert time.monotonic() < deadline, f"read {len(records)} of {sum(ends.values())}"
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                records.append(message)
        return records
    finally:
        consumer.close()


def end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: end_offset(consumer, TopicPartition(topic, p)) for p in partitions}


def end_offset(consumer: Consumer, partition: TopicPartition, timeout: float = 10) -> int:
    """The high watermark; a topic created a moment ago may not have its leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=timeout)[1])
        except KafkaException as error:
            if error.args[0].code() not in LEADER_PENDING or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def total_records(settings: Settings, topics: list[str]) -> int:
    consumer = Consumer({**settings.kafka.librdkafka_config(), "group.id": "offsets"})
    try:
        return sum(sum(end_offsets(consumer, topic).values()) for topic in topics)
    finally:
        consumer.close()


def headers_of(record: Message) -> dict[str, bytes]:
    return dict(record.headers() or [])


async def poll_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# --- Accepted webhooks ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(PAYLOADS))
async def test_a_signed_webhook_lands_byte_for_byte_with_key_and_headers(
    client: Client, ingest_settings: Settings, provider: str
) -> None:
    body, key = PAYLOADS[provider]
    before = int(time.time() * 1000)
    response = await client.post(
        f"/webhooks/{provider}", data=body, headers=signed_headers(ingest_settings, provider, body)
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    request_id = response.headers["X-Request-Id"]
    assert answer == {"status": "stored", "request_id": request_id}

    [record] = read_topic(ingest_settings, TopicNames(ingest_settings.topic_prefix).raw(provider))
    assert record.value() == body
    assert record.key() == key
    headers = headers_of(record)
    assert headers["mailstream.provider"] == provider.encode()
    assert headers["mailstream.request_id"] == request_id.encode()
    assert headers["content-type"] == b"application/json"
    assert before <= int(headers["mailstream.received_at"]) <= int(time.time() * 1000)


# Providers whose signatures carry a time, checked against a freshness window.
TIMESTAMPED = frozenset({"mailbot", "mailgun", "resend", "sendgrid", "ses"})


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_every_provider_refuses_forged_stale_and_unsigned_and_stores_the_signed(
    settings: Settings, provider: str, tmp_path: Path
) -> None:
    """Each provider's own scheme, through the real ingest with its local credentials: a
    delivery in the provider's shape signed under other credentials, signed too long ago
    (where the scheme has a time), or unsigned is refused 401 with nothing stored; signed
    properly, it is stored byte for byte."""
    webhook = PROVIDERS[provider]
    auth = webhook.local_auth(tmp_path)
    configured = replace(
        settings, ingest=IngestSettings(providers={provider: auth}, dedupe_window_seconds=0)
    )
    topic = TopicNames(configured.topic_prefix).raw(provider)
    create_topics(configured, [s for s in topic_specs(configured, PROVIDERS) if s.name == topic])
    delivered = Sample(
        "delivered", "lead@example.com", "m-1@example.com", 1_795_000_000_000, "e-1", ""
    )
    sample = orjson.dumps(webhook.sample(delivered))
    now = time.time()
    refused = {
        "forged": webhook.signed(sample, webhook.local_auth(tmp_path), now),
        "unsigned": (sample, {}),
    }
    stale = webhook.signed(sample, auth, now - 3 * 3600)  # beyond every window (SES: an hour)
    async with serving(configured) as client:
        if provider in TIMESTAMPED:
            refused["stale"] = stale
        else:  # nothing dates the request: only the dedupe window stops a replay
            response = await client.post(f"/webhooks/{provider}", data=stale[0], headers=stale[1])
            assert response.status == 200, await response.text()
        stored_before = total_records(configured, [topic])
        for case, (body, headers) in refused.items():
            response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
            assert response.status == 401, f"{case}: {await response.text()}"
            assert (await response.json())["error"] == "invalid_signature"
        assert total_records(configured, [topic]) == stored_before
        body, headers = webhook.signed(sample, auth, time.time())
        response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
        assert response.status == 200, await response.text()
    assert read_topic(configured, topic)[-1].value() == body


async def test_a_previous_secret_is_accepted_while_it_is_rotated(
    client: Client, ingest_settings: Settings
) -> None:
    body, _ = PAYLOADS["mailbot"]
    headers = signed_headers(ingest_settings, "mailbot", body, secrets=("mailbot-previous",))
    response = await client.post("/webhooks/mailbot", data=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_a_signed_body_that_is_not_json_is_stored_for_the_dead_letter_path(
    client: Client, ingest_settings: Settings
) -> None:
    body = b"event=delivered&id=\xff\xfe not json"
    headers = signed_headers(ingest_settings, "maileroo", body)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = await client.post("/webhooks/maileroo", data=body, headers=headers)
    assert response.status == 200, await response.text()
    [record] = read_topic(ingest_settings, TopicNames(ingest_settings.topic_prefix).raw("maileroo"))
    assert (record.value(), record.key()) == (body, None)
    assert headers_of(record)["content-type"] == b"application/x-www-form-urlencoded"


# --- Refused webhooks -------------------------------------------------------------------------

Request = tuple[str, bytes | Callable[[], AsyncIterator[bytes]], dict[str, str]]


def forged_mailbot(settings: Settings) -> Request:
    body, _ = PAYLOADS["mailbot"]
    return "/webhooks/mailbot", body, signed_headers(settings, "mailbot", body, secrets=("guess",))


def altered_maileroo(settings: Settings) -> Request:
    body, _ = PAYLOADS["maileroo"]
    headers = signed_headers(settings, "maileroo", body)
    return "/webhooks/maileroo", body.replace(b"ml-1", b"ml-2"), headers


def stale_mailbot(settings: Settings) -> Request:
    body, _ = PAYLOADS["mailbot"]
    config = settings.ingest.auth("mailbot")
    headers = PROVIDERS["mailbot"].sign(body, config, time.time() - config.max_age_seconds - 5)
    return "/webhooks/mailbot", body, headers


def unsigned_inboxroad(_settings: Settings) -> Request:
    return "/webhooks/inboxroad", PAYLOADS["inboxroad"][0], {}


def oversized_declared(settings: Settings) -> Request:
    body = b"x" * (settings.ingest.max_body_bytes + 1)
    return "/webhooks/maileroo", body, signed_headers(settings, "maileroo", body)


def oversized_chunked(settings: Settings) -> Request:
    body = b"x" * (settings.ingest.max_body_bytes + 1)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced while reading
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    return "/webhooks/maileroo", chunks, signed_headers(settings, "maileroo", body)


def unknown_provider(_settings: Settings) -> Request:
    return "/webhooks/nosuchprovider", b"{}", {}


@pytest.mark.parametrize(
    ("build", "status", "error"),
    [
        (forged_mailbot, 401, "invalid_signature"),
        (altered_maileroo, 401, "invalid_signature"),
        (stale_mailbot, 401, "invalid_signature"),
        (unsigned_inboxroad, 401, "invalid_signature"),
        (oversized_declared, 413, "too_large"),
        (oversized_chunked, 413, "too_large"),
        (unknown_provider, 404, "unknown_provider"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
async def test_a_refused_request_gets_its_status_and_nothing_is_produced(
    client: Client,
    ingest_settings: Settings,
    build: Callable[[Settings], Request],
    status: int,
    error: str,
) -> None:
    path, body, headers = build(ingest_settings)
    response = await client.post(path, data=body() if callable(body) else body, headers=headers)
    assert response.status == status, await response.text()
    answer = await response.json()
    assert answer["error"] == error
    assert answer["reason"]
    assert total_records(ingest_settings, raw_topics(ingest_settings)) == 0


async def test_the_401_reason_says_what_is_wrong(client: Client, ingest_settings: Settings) -> None:
    path, body, headers = stale_mailbot(ingest_settings)
    answer = await (await client.post(path, data=body, headers=headers)).json()
    assert "window" in answer["reason"]
    path, body, headers = unsigned_inboxroad(ingest_settings)
    answer = await (await client.post(path, data=body, headers=headers)).json()
    assert "missing" in answer["reason"]


async def test_a_provider_without_secrets_is_refused_unless_unsigned_is_allowed(
    settings: Settings,
) -> None:
    create_raw_topics(settings)
    body, _ = PAYLOADS["maileroo"]
    async with serving(settings) as client:
        response = await client.post("/webhooks/maileroo", data=body)
        assert response.status == 401
        assert "no secret configured" in (await response.json())["reason"]
    allowed = IngestSettings(providers={"maileroo": ProviderAuth(allow_unsigned=True)})
    async with serving(replace(settings, ingest=allowed)) as client:
        assert (await client.post("/webhooks/maileroo", data=body)).status == 200


async def test_a_wrong_method_is_405(client: Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/webhooks/mailbot")
        assert response.status == 405, method
        assert response.headers["Allow"] == "POST"


# --- Size limits, as the broker takes them -----------------------------------------------------

ONE_MEBIBYTE = 1024 * 1024


async def test_a_body_of_exactly_the_limit_is_stored_and_one_byte_more_is_413(
    settings: Settings,
) -> None:
    """1 MiB of random bytes (lz4 cannot shrink them) is more than librdkafka's default record
    (1,000,000 bytes) and than the broker's default (1 MiB + 12 bytes, batch included)."""
    configured = replace(settings, ingest=replace(INGEST, max_body_bytes=ONE_MEBIBYTE))
    create_raw_topics(configured)
    at_limit = os.urandom(ONE_MEBIBYTE)
    above = at_limit + b"x"
    async with serving(configured) as client:
        for body, status in ((at_limit, 200), (above, 413)):
            headers = signed_headers(configured, "maileroo", body)
            data = io.BytesIO(body)  # aiohttp warns about large bytes sent in one write
            response = await client.post("/webhooks/maileroo", data=data, headers=headers)
            assert response.status == status, await response.text()
    [record] = read_topic(configured, TopicNames(configured.topic_prefix).raw("maileroo"))
    assert record.value() == at_limit


async def test_a_size_refusal_by_kafka_is_413_and_its_text_only_in_the_log(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A raw topic created before its max.message.bytes was raised refuses a large record."""
    configured = replace(settings, ingest=replace(INGEST, max_body_bytes=ONE_MEBIBYTE))
    small = {"max.message.bytes": str(64 * 1024)}
    create_topics(
        configured,
        [replace(spec, configs={**spec.configs, **small}) for spec in raw_topic_specs(configured)],
    )
    body = os.urandom(100 * 1024)
    async with serving(configured) as client:
        headers = signed_headers(configured, "maileroo", body)
        with caplog.at_level(logging.ERROR, logger="mailstream.ingest"):
            response = await client.post("/webhooks/maileroo", data=body, headers=headers)
        text = await response.text()
    assert response.status == 413, text
    assert orjson.loads(text)["error"] == "too_large"
    for broker_text in ("MSG_SIZE_TOO_LARGE", "Broker", "Message size"):
        assert broker_text not in text
    assert "MSG_SIZE_TOO_LARGE" in caplog.text and "max.message.bytes" in caplog.text
    assert total_records(configured, raw_topics(configured)) == 0


# --- Replays ----------------------------------------------------------------------------------


async def test_the_same_signed_body_twice_is_one_record_and_two_200s(
    client: Client, ingest_settings: Settings
) -> None:
    names = TopicNames(ingest_settings.topic_prefix)
    for provider, (body, _) in sorted(PAYLOADS.items()):
        first, again = [
            await client.post(
                f"/webhooks/{provider}",
                data=body,
                headers=signed_headers(ingest_settings, provider, body),  # mailbot: a new time
            )
            for _ in range(2)
        ]
        assert (first.status, again.status) == (200, 200), await again.text()
        stored = await first.json()
        assert await again.json() == {"status": "duplicate", "request_id": stored["request_id"]}
        [record] = read_topic(ingest_settings, names.raw(provider))
        assert headers_of(record)["mailstream.request_id"] == stored["request_id"].encode()

    body = b'{"event_type":"delivered","message_id":"together"}'
    headers = signed_headers(ingest_settings, "maileroo", body)
    together = await asyncio.gather(
        *(client.post("/webhooks/maileroo", data=body, headers=headers) for _ in range(3))
    )
    assert [response.status for response in together] == [200] * 3
    values = [record.value() for record in read_topic(ingest_settings, names.raw("maileroo"))]
    assert values.count(body) == 1


# --- Operations endpoints ---------------------------------------------------------------------


async def test_health_readiness_and_metrics(client: Client, ingest_settings: Settings) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    body, _ = PAYLOADS["maileroo"]
    headers = signed_headers(ingest_settings, "maileroo", body)
    assert (await client.post("/webhooks/maileroo", data=body, headers=headers)).status == 200
    assert (await client.post("/webhooks/maileroo", data=body)).status == 401
    assert (await client.post("/webhooks/nobody", data=body)).status == 404

    response = await client.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = await response.text()
    requests = "mailstream_ingest_requests_total"
    assert sample(text, requests, provider="maileroo", status="200") == 1
    assert sample(text, requests, provider="maileroo", status="401") == 1
    assert sample(text, requests, provider="unknown", status="404") == 1
    assert sample(text, "mailstream_ingest_stored_bytes_total", provider="maileroo") == len(body)
    assert sample(text, "mailstream_ingest_produce_latency_seconds_count") == 1
    assert sample(text, "mailstream_ingest_kafka_reachable") == 1


async def test_readiness_fails_while_the_raw_topics_are_missing(settings: Settings) -> None:
    async with serving(settings) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert "missing topics" in (await response.json())["reason"]


# --- A broker of our own, to stop and freeze ----------------------------------------------


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("own-broker"))
    try:
        yield broker
    finally:
        broker.stop()


def on_own_broker(broker: LocalBroker, settings: Settings) -> Settings:
    kafka = KafkaSettings(bootstrap_servers=broker.start())
    configured = replace(settings, kafka=kafka, ingest=INGEST)
    create_raw_topics(configured)
    return configured


@contextlib.contextmanager
def frozen(broker: LocalBroker) -> Iterator[None]:
    """The broker stops answering (SIGSTOP) but keeps its connections, until the block ends."""
    pid = broker.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


async def test_a_stopped_broker_gets_503_and_the_retries_land_exactly_once(
    own_broker: LocalBroker, settings: Settings
) -> None:
    configured = on_own_broker(own_broker, settings)
    topic = TopicNames(configured.topic_prefix).raw("maileroo")
    bodies = [b'{"event_type":"delivered","message_id":"outage-%d"}' % n for n in range(3)]
    async with serving(configured) as client:

        async def post(body: bytes) -> aiohttp.ClientResponse:
            headers = signed_headers(configured, "maileroo", body)
            return await client.post("/webhooks/maileroo", data=body, headers=headers)

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        assert (await post(b'{"before":"outage"}')).status == 200
        own_broker.stop()
        refused = await asyncio.gather(*(post(body) for body in bodies))
        assert [r.status for r in refused] == [503] * len(bodies)
        assert all(r.headers["Retry-After"] == "5" for r in refused)
        answer = await refused[0].json()
        assert answer["error"] == "kafka_unavailable"
        assert answer["reason"] == "Kafka did not confirm the write; retry later"

        own_broker.start()
        await poll_until(ready, 30, "readiness after the broker restarted")
        acknowledged = []
        for body in bodies:  # a provider retries until it gets a 2xx
            response = await post(body)
            while response.status == 503:
                response = await post(body)
            assert response.status == 200, await response.text()
            assert (await response.json())["status"] == "stored", "a failed write is retryable"
            acknowledged.append(response.headers["X-Request-Id"].encode())

    records = read_topic(configured, topic)
    assert sorted(record.value() for record in records) == sorted([b'{"before":"outage"}', *bodies])
    assert set(acknowledged) <= {headers_of(r)["mailstream.request_id"] for r in records}


async def test_while_the_broker_is_down_webhooks_get_503_at_once_and_recover_by_themselves(
    own_broker: LocalBroker, settings: Settings
) -> None:
    configured = on_own_broker(own_broker, settings)
    configured = replace(configured, ingest=replace(INGEST, produce_timeout_seconds=10.0))
    body = b'{"event_type":"delivered","message_id":"after-the-outage"}'
    headers = signed_headers(configured, "maileroo", body)
    async with serving(configured) as client:

        def kafka_reachable(expected: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:  # /metrics reads the state; it probes nothing
                text = await (await client.get("/metrics")).text()
                return sample(text, "mailstream_ingest_kafka_reachable") == expected

            return check

        await asyncio.to_thread(own_broker.stop)
        await poll_until(kafka_reachable(0), 30, "the producer to report the brokers down")
        started = time.monotonic()
        response = await client.post("/webhooks/maileroo", data=body, headers=headers)
        assert response.status == 503
        assert time.monotonic() - started < 1.0, "not the 10 s produce timeout"
        assert response.headers["Retry-After"] == "5"

        await asyncio.to_thread(own_broker.start)
        await poll_until(kafka_reachable(1), 30, "the producer to find the broker again")
        response = await client.post("/webhooks/maileroo", data=body, headers=headers)
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "stored"
    [record] = read_topic(configured, TopicNames(configured.topic_prefix).raw("maileroo"))
    assert record.value() == body


# --- Graceful shutdown of `mailstream ingest` -------------------------------------------------


@contextlib.contextmanager
def ingest_process(settings: Settings, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MAILSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "MAILSTREAM_INGEST_MAILEROO_SECRETS": ",".join(settings.ingest.auth("maileroo").secrets),
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailstream", "ingest", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        # A reset during the handshake means the listener closed with our SYN in its backlog.
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_answers_the_request_in_flight_then_exits_0(
    own_broker: LocalBroker, settings: Settings, tmp_path: Path
) -> None:
    configured = on_own_broker(own_broker, settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ingest.log"
    body, _ = PAYLOADS["maileroo"]
    headers = signed_headers(configured, "maileroo", body)
    launched = time.time()  # /proc's boot time has whole seconds
    with ingest_process(configured, port, log) as process:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                assert process.poll() is None, log.read_text()
                return not await refuses_connections(port)

            async def scrape() -> str:
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
                    return await response.text()

            async def awaiting_kafka() -> bool:
                return sample(await scrape(), "mailstream_ingest_produce_in_flight") == 1

            await poll_until(healthy, 30, "mailstream ingest to listen")
            text = await scrape()
            found = families(text)
            assert {name: found.get(name) for name in INGEST_FAMILIES} == INGEST_FAMILIES
            assert {"process_cpu_seconds", "process_open_fds", "python_info"} <= set(found)
            started = sample(text, "process_start_time_seconds")
            assert started is not None and started >= launched - 2, "the ingest process's own"
            assert sample(text, "mailstream_ingest_kafka_reachable") == 1
            with frozen(own_broker):
                posting = asyncio.ensure_future(
                    session.post(f"{base}/webhooks/maileroo", data=body, headers=headers)
                )
                await poll_until(awaiting_kafka, 10, "the webhook to wait for Kafka")
                process.send_signal(signal.SIGTERM)
                await poll_until(lambda: refuses_connections(port), 10, "the listener to close")
            async with await posting as response:
                assert response.status == 200, await response.text()
        assert await asyncio.to_thread(process.wait, 20) == 0, log.read_text()

    [record] = read_topic(configured, TopicNames(configured.topic_prefix).raw("maileroo"))
    assert record.value() == body
