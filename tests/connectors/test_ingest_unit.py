"""The ingest producer's delivery-report plumbing, its outage state and the dedupe window,
without a broker. (The metrics: tests/connectors/test_ingest_metrics.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
import uuid

import pytest
from confluent_kafka import KafkaError

from mailstream.connectors.ingest.dedupe import RecentWebhooks, webhook_digest
from mailstream.connectors.ingest.producer import (
    AsyncProducer,
    ProduceError,
    _produce_error,
    _settle,
    producer_config,
)
from mailstream.errors import ErrorKind

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}  # a port nobody listens on
RECORD_BYTES = 1_200_000


def unreachable_producer(timeout_seconds: float) -> AsyncProducer:
    config = producer_config(UNREACHABLE, timeout_seconds, max_record_bytes=RECORD_BYTES)
    return AsyncProducer(config, flush_timeout_seconds=1)


async def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_settle_resolves_fails_and_skips_cancelled_futures() -> None:
    loop = asyncio.get_running_loop()
    stored, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    cancelled.cancel()
    _settle([(stored, None), (failed, KafkaError(KafkaError._MSG_TIMED_OUT)), (cancelled, None)])
    assert stored.result() is None
    with pytest.raises(ProduceError) as raised:
        failed.result()
    assert raised.value.reason == "_MSG_TIMED_OUT"


def test_producer_config_is_durable_and_aligned_with_the_timeout() -> None:
    config = producer_config({"bootstrap.servers": "b:9092"}, 2.5, max_record_bytes=RECORD_BYTES)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["delivery.timeout.ms"] == 2500
    assert config["message.max.bytes"] == RECORD_BYTES


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE])
def test_a_size_refusal_is_too_large_not_unavailable(code: int) -> None:
    assert _produce_error(KafkaError(code)).kind is ErrorKind.TOO_LARGE
    assert _produce_error(KafkaError(KafkaError._MSG_TIMED_OUT)).kind is ErrorKind.KAFKA_UNAVAILABLE


async def test_an_unreachable_cluster_fails_the_write_within_the_delivery_timeout() -> None:
    producer = unreachable_producer(0.5)
    producer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ProduceError) as raised:
            await producer.produce("email.raw.mailbot", b"k", b"{}", [("h", b"v")])
        failed_after = time.monotonic() - started
    finally:
        await producer.close()
    assert raised.value.reason == "_MSG_TIMED_OUT"
    assert failed_after < 3, "librdkafka scans for timed-out records every second"


async def test_while_no_broker_is_reachable_a_write_fails_at_once() -> None:
    producer = unreachable_producer(5.0)
    producer.start()
    try:
        await wait_until(lambda: producer.unreachable is not None, 10, "_ALL_BROKERS_DOWN")
        started = time.monotonic()
        with pytest.raises(ProduceError) as raised:
            await producer.produce("email.raw.mailbot", b"k", b"{}", [])
        assert time.monotonic() - started < 0.5, "not the 5 s delivery timeout"
    finally:
        await producer.close()
    assert raised.value.reason == "_ALL_BROKERS_DOWN"
    assert raised.value.kind is ErrorKind.KAFKA_UNAVAILABLE


def ignore_librdkafka_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka's error_cb is bound when the producer is built: patch the class first."""
    monkeypatch.setattr(AsyncProducer, "_on_error", lambda _self, _error: None)


async def test_a_known_outage_ends_when_the_cluster_answers_a_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ignore_librdkafka_errors(monkeypatch)  # only the fake outage below
    producer = unreachable_producer(5.0)
    answers = iter([False, False, True])  # the cluster is back at the third probe

    async def metadata_topics(_timeout: float = 1.0) -> set[str]:
        if not next(answers):
            raise ProduceError("_TRANSPORT", "no broker answered")
        producer.mark_reachable()
        return set()

    monkeypatch.setattr(producer, "metadata_topics", metadata_topics)
    producer.start()
    try:
        producer.mark_unreachable("_ALL_BROKERS_DOWN: fake")
        with pytest.raises(ProduceError, match="fake"):
            await producer.produce("t", None, b"1", [])
        await wait_until(lambda: producer.unreachable is None, 5, "the probe to end the outage")
        with pytest.raises(ProduceError) as raised:  # queued again: the record times out
            await producer.produce("t", None, b"1", [])
        assert raised.value.reason == "_MSG_TIMED_OUT"
    finally:
        await producer.close()


async def test_a_full_local_queue_is_a_produce_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ignore_librdkafka_errors(monkeypatch)  # a known outage would refuse both writes at once
    config = {
        **producer_config(UNREACHABLE, 0.5, max_record_bytes=RECORD_BYTES),
        "queue.buffering.max.messages": 1,
    }
    producer = AsyncProducer(config, flush_timeout_seconds=1)
    producer.start()
    try:
        outcomes = await asyncio.gather(
            producer.produce("t", None, b"1", []),
            producer.produce("t", None, b"2", []),
            return_exceptions=True,
        )
    finally:
        await producer.close()
    assert [getattr(outcome, "reason", None) for outcome in outcomes] == [
        "_MSG_TIMED_OUT",
        "queue_full",
    ]


async def test_metadata_of_an_unreachable_cluster_is_a_produce_error() -> None:
    producer = unreachable_producer(0.5)
    producer.start()
    try:
        with pytest.raises(ProduceError):
            await producer.metadata_topics()
    finally:
        await producer.close()


# --- The dedupe window ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_body_is_remembered_per_provider_for_the_window_only() -> None:
    clock = Clock()
    recent = RecentWebhooks(window_seconds=60, max_entries=10, clock=clock)
    digest = webhook_digest("maileroo", b'{"id": 1}')
    assert digest == ("maileroo", hashlib.sha256(b'{"id": 1}').digest())
    assert recent.first_request_id(digest) is None
    recent.remember(digest, "first")
    clock.now += 59
    assert recent.first_request_id(digest) == "first"
    assert recent.first_request_id(webhook_digest("inboxroad", b'{"id": 1}')) is None
    clock.now += 1
    assert recent.first_request_id(digest) is None
    assert len(recent) == 0, "expired entries are dropped"


def test_the_oldest_bodies_go_first_beyond_max_entries() -> None:
    recent = RecentWebhooks(window_seconds=60, max_entries=2, clock=Clock())
    digests = [webhook_digest("mailbot", bytes([n])) for n in range(3)]
    for number, digest in enumerate(digests):
        recent.remember(digest, f"request-{number}")
    assert len(recent) == 2
    assert [recent.first_request_id(d) for d in digests] == [None, "request-1", "request-2"]


def test_a_zero_window_remembers_nothing() -> None:
    recent = RecentWebhooks(window_seconds=0, max_entries=10)
    recent.remember(webhook_digest("mailbot", b"{}"), "first")
    assert (recent.enabled, len(recent)) == (False, 0)


def test_an_entry_costs_about_the_documented_400_bytes() -> None:
    entries = 20_000
    recent = RecentWebhooks(window_seconds=3600, max_entries=entries)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(entries):
            recent.remember(webhook_digest("maileroo", b"%d" % number), uuid.uuid4().hex)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / entries
    finally:
        tracemalloc.stop()
    assert 250 < per_entry < 450, per_entry
