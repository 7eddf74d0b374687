"""The worker's aiokafka consumer (streams/transport.py) on the real broker. aiokafka leaves a
partition out of its next fetch while the worker has not taken that partition's fetched records
(a busy worker); the fetch then names only quiet partitions and the broker holds it. New
records of the busy partition wait for it: at most MAILSTREAM_CONSUMER_FETCH_MAX_WAIT_MS, not
the 1.5 s Faust configures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.app import create_app
from mailstream.streams.transport import ConsumerThread, Transport
from mailstream.topics import TopicNames

pytestmark = pytest.mark.kafka

FAUST_FETCH_MAX_WAIT_SECONDS = 1.5
# Longer than aiokafka's prefetch backoff (0.1 s), after which it fetches the other partitions.
BUSY_SECONDS = 0.3


@pytest.fixture
async def consumer(
    settings: Settings, names: TopicNames, tmp_path: Path
) -> AsyncIterator[AIOKafkaConsumer]:
    """The aiokafka consumer the worker's consumer thread builds, started, nothing assigned."""
    app: faust.App = create_app(
        replace(settings, data_dir=tmp_path), default_policy(), web_enabled=False
    )
    thread = app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, ConsumerThread) and isinstance(app.transport, Transport)
    built = thread._create_worker_consumer(app.transport)
    await built.start()
    yield built
    await built.stop()


def produce(settings: Settings, partition: TopicPartition, value: bytes) -> None:
    producer = Producer(settings.kafka.librdkafka_config())
    producer.produce(partition.topic, value, partition=partition.partition)
    assert producer.flush(30) == 0


async def next_value(consumer: AIOKafkaConsumer, partition: TopicPartition) -> bytes | None:
    batch = await consumer.getmany(partition, timeout_ms=10_000, max_records=1)
    records = batch.get(partition, [])
    assert records, "no record within 10 s"
    return records[0].value


async def test_a_busy_partition_waits_for_the_quiet_partitions_fetch_at_most_the_fetch_wait(
    consumer: AIOKafkaConsumer, settings: Settings, names: TopicNames
) -> None:
    busy, quiet = TopicPartition(names.events, 0), TopicPartition(names.events, 1)
    consumer.assign([busy, quiet])
    await consumer.seek_to_end(busy, quiet)
    produce(settings, busy, b"first")
    assert await next_value(consumer, busy) == b"first"
    produce(settings, busy, b"second")  # fetched at once, then left untaken while busy
    await asyncio.sleep(BUSY_SECONDS)
    produce(settings, busy, b"third")
    produced = time.monotonic()
    assert await next_value(consumer, busy) == b"second"
    assert await next_value(consumer, busy) == b"third"
    assert time.monotonic() - produced < FAUST_FETCH_MAX_WAIT_SECONDS / 2
