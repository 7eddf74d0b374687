"""Reading topics from the outside, as a downstream service, an operator or a test would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, TopicPartition

from mailstream.settings import Settings

Records = list[tuple[bytes | None, bytes | None]]


def read_until(
    settings: Settings, topic: str, done: Callable[[Records], bool], timeout: float = 90
) -> Records:
    """Read `topic` from the beginning until `done(records)` holds; TimeoutError at the deadline."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka_config(),
            "group.id": f"mailstream-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: Records = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met in {timeout}s ({len(records)} records read)")
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    records.append((message.key(), message.value()))
    finally:
        consumer.close()
    return records


def end_offsets(settings: Settings, topic: str) -> int:
    """How many records were ever written to `topic` (the sum of its high watermarks)."""
    consumer = Consumer({**settings.kafka.librdkafka_config(), "group.id": "mailstream-watermarks"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
            for partition in metadata.topics[topic].partitions
        )
    finally:
        consumer.close()


def latest_by_key(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[bytes, bytes | None]:
    """What a compacted topic converges to: the last value per key (None: a tombstone)."""
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key is not None:
            latest[key] = value
    return latest
