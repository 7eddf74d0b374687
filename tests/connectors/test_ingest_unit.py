"""The ingest producer's delivery-report plumbing and the metrics text, without a broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import KafkaError

from mailstream.connectors.ingest.metrics import IngestMetrics
from mailstream.connectors.ingest.producer import (
    AsyncProducer,
    ProduceError,
    _settle,
    producer_config,
)

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}


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
    config = producer_config({"bootstrap.servers": "b:9092"}, 2.5)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["delivery.timeout.ms"] == 2500


async def test_an_unreachable_cluster_fails_the_write_within_the_delivery_timeout() -> None:
    producer = AsyncProducer(producer_config(UNREACHABLE, 0.5), flush_timeout_seconds=1)
    producer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ProduceError) as raised:
            await producer.produce("email.raw.mailbot", b"k", b"{}", [("h", b"v")])
    finally:
        await producer.close()
    assert raised.value.reason == "_MSG_TIMED_OUT"
    assert time.monotonic() - started < 3, "librdkafka scans for timed-out records every second"


async def test_a_full_local_queue_is_a_produce_error_not_a_hang() -> None:
    config = {**producer_config(UNREACHABLE, 0.5), "queue.buffering.max.messages": 1}
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
    producer = AsyncProducer(producer_config(UNREACHABLE, 0.5), flush_timeout_seconds=1)
    producer.start()
    try:
        with pytest.raises(ProduceError):
            await producer.metadata_topics()
    finally:
        await producer.close()


def test_metrics_render_counters_and_a_cumulative_histogram() -> None:
    metrics = IngestMetrics()
    metrics.count_request("mailbot", 200)
    metrics.count_request("mailbot", 200)
    metrics.count_request("unknown", 404)
    metrics.count_stored("mailbot", 120, 0.004)
    metrics.count_stored("mailbot", 80, 0.2)
    text = metrics.render()
    assert 'mailstream_ingest_requests_total{provider="mailbot",status="200"} 2\n' in text
    assert 'mailstream_ingest_requests_total{provider="unknown",status="404"} 1\n' in text
    assert 'mailstream_ingest_stored_bytes_total{provider="mailbot"} 200\n' in text
    assert 'mailstream_ingest_produce_latency_seconds_bucket{le="0.001"} 0\n' in text
    assert 'mailstream_ingest_produce_latency_seconds_bucket{le="0.005"} 1\n' in text
    assert 'mailstream_ingest_produce_latency_seconds_bucket{le="0.25"} 2\n' in text
    assert 'mailstream_ingest_produce_latency_seconds_bucket{le="+Inf"} 2\n' in text
    assert "mailstream_ingest_produce_latency_seconds_count 2\n" in text
    assert "# TYPE mailstream_ingest_produce_latency_seconds histogram\n" in text
