"""Reading topics from the outside, as a downstream service, an operator or a test would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from mailstream.settings import Settings
from mailstream.streams.records import SourceRecord
from mailstream.topics import Partition

Records = list[tuple[bytes | None, bytes | None]]
Value = TypeVar("Value")


def throwaway_consumer(settings: Settings, purpose: str, **config: Any) -> Consumer:
    """A consumer in a consumer group of its own that commits nothing: for reading topics by
    assignment (librdkafka wants a group.id all the same) or subscribing without disturbing
    anyone's offsets. `config` adds or overrides librdkafka properties."""
    return Consumer(
        {
            **settings.kafka.librdkafka_config(),
            "group.id": f"mailstream-{purpose}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            **config,
        }
    )


def read_until(
    settings: Settings, topic: str, done: Callable[[Records], bool], timeout: float = 90
) -> Records:
    """Read `topic` from the beginning until `done(records)` holds; TimeoutError at the deadline."""
    consumer = throwaway_consumer(settings, "reader", **{"auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    records: Records = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: condition not met in {timeout}s ({len(records)} records read)"
                )
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    records.append((message.key(), message.value()))
    finally:
        consumer.close()
    return records


LEADERLESS = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)


def watermark_offsets(
    consumer: Consumer, partition: TopicPartition, timeout: float = 15
) -> tuple[int, int]:
    """(low, high) of `partition`, retried while it has no leader (a topic just created, a
    broker just restarted) until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() not in LEADERLESS or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Watermarks:
    """How many records topics hold (the sums of their high watermarks), polled with one
    long-lived client, cheap to ask often."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = throwaway_consumer(settings, "watermarks")

    def total(self, topic: str) -> int:
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            watermark_offsets(self._consumer, TopicPartition(topic, p), 10)[1] for p in partitions
        )

    def wait_for(
        self,
        topic: str,
        count: int,
        timeout: float,
        check: Callable[[], None] = lambda: None,
        poll_seconds: float = 0.02,
    ) -> int:
        """Poll until `topic` holds `count` records, calling `check` (which may raise) between
        polls; returns the count reached, TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while (total := self.total(topic)) < count:
            check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {total}/{count} records after {timeout}s")
            time.sleep(poll_seconds)
        return total

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Watermarks:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_to_end(
    settings: Settings, topic: str, start: Mapping[Partition, int] | None = None
) -> list[SourceRecord]:
    """Every record of `topic` from `start` (default: the beginning) up to the end offsets as
    of the call, without joining or committing to a consumer group; [] for a missing topic."""
    return list(iterate_to_end(settings, topic, start))


def iterate_to_end(
    settings: Settings, topic: str, start: Mapping[Partition, int] | None = None
) -> Iterator[SourceRecord]:
    """`read_to_end` one record at a time, holding none of them."""
    consumer = throwaway_consumer(settings, "reader", **{"enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=15).topics[topic]
        if metadata.error is not None:
            return
        remaining: dict[int, int] = {}
        assignment = []
        for partition in metadata.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition))
            begin = max(low, (start or {}).get((topic, partition), low))
            if begin < high:
                remaining[partition] = high
                assignment.append(TopicPartition(topic, partition, begin))
        consumer.assign(assignment)
        read = 0
        last_message = time.monotonic()
        while remaining:
            if time.monotonic() - last_message > 30:
                raise TimeoutError(f"{topic}: no record for 30 s, {read} read")
            for message in consumer.consume(1000, timeout=0.5):
                last_message = time.monotonic()
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                record = source_record(message)
                if error is None:
                    read += 1
                    yield record
                if error is not None or record.offset >= remaining.get(record.partition, 0) - 1:
                    remaining.pop(record.partition, None)
    finally:
        consumer.close()


def source_record(message: Message) -> SourceRecord:
    """A consumed record as the pipeline's processors see it."""
    timestamp_type, timestamp = message.timestamp()
    return SourceRecord(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp=timestamp if timestamp_type else None,
        key=message.key(),
        value=message.value(),
        headers=tuple(cast(list[tuple[str, bytes | None]], message.headers() or ())),
    )


def live_keys(records: Iterable[SourceRecord]) -> dict[bytes, int]:
    """Key -> partition of every key of a compacted topic whose latest value is not a
    tombstone."""
    latest = latest_by_key((record.key, record) for record in records)
    return {key: record.partition for key, record in latest.items() if record.value is not None}


def latest_by_key(records: Iterable[tuple[bytes | None, Value]]) -> dict[bytes, Value]:
    """What a compacted topic converges to: the last value per key (a None value: a tombstone)."""
    latest: dict[bytes, Value] = {}
    for key, value in records:
        if key is not None:
            latest[key] = value
    return latest
