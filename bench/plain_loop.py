"""The pipeline without Faust: one confluent-kafka consumer, the project's own processors
(`mailstream.streams.normalize.Normalizer`, `mailstream.streams.recipients.StateKeeper`) over
dict tables, one producer. The ceiling for Python on librdkafka, doing the same Kafka work as
the worker:

- one consumer reads the raw topics, email.events and email.commands (as the worker's one
  consumer does);
- a raw record goes through the Normalizer, an event through the StateKeeper; their outputs
  are produced (events, dead letters, states, suppressions);
- each table write is also produced to a compacted changelog topic, in the source record's
  partition (as Faust's changelogs are), so the state survives as the worker's does;
- every COMMIT_SECONDS the producer is flushed and then the offsets are committed
  (at-least-once, like Faust's commit).

It runs until SIGTERM, like the worker. It does not restore its tables from the changelogs on
start: a benchmark peer, not a replacement worker. Run by bench/e2e_bench.py; by hand:
  .venv/bin/python bench/plain_loop.py   (MAILSTREAM_* settings from the environment, as for
  `mailstream worker`; the topics must exist)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
from common import client_config
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.processors import build_processors, collect_garbage_less
from mailstream.streams.reader import source_record
from mailstream.streams.records import Output
from mailstream.topics import COMPACTED, TABLES, TopicNames, TopicSpec, create_topics
from mailstream.topics import changelog_topics as changelog_topics_named

COMMIT_SECONDS = 2.8  # Faust's broker_commit_interval
BATCH = 1000


class ChangelogTable(MutableMapping[bytes, dict[str, Any]]):
    """A dict whose writes are also produced to a changelog topic, in the partition of the
    record being processed (set `partition` before each record)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._data: dict[bytes, dict[str, Any]] = {}
        self._producer = producer
        self._topic = topic
        self.partition = 0

    def __getitem__(self, key: bytes) -> dict[str, Any]:
        return self._data[key]

    def __setitem__(self, key: bytes, value: dict[str, Any]) -> None:
        self._data[key] = value
        _produce(self._producer, self._topic, key, orjson.dumps(value), self.partition)

    def __delitem__(self, key: bytes) -> None:
        del self._data[key]
        _produce(self._producer, self._topic, key, None, self.partition)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int = -1,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=partition, headers=list(headers) or None)
            return
        except BufferError:
            producer.poll(0.05)


def changelog_topics(settings: Settings) -> dict[str, str]:
    names = dict(zip(TABLES, changelog_topics_named(f"{settings.app_id}-plain"), strict=True))
    create_topics(
        settings, [TopicSpec(name, settings.partitions, 1, COMPACTED) for name in names.values()]
    )
    return names


def run(settings: Settings) -> None:
    out = TopicNames(settings.topic_prefix)
    policy = default_policy()
    raw_topics = {out.raw(provider): provider for provider in PROVIDERS}
    built = build_processors(settings, policy)
    normalizer, keeper = built.normalizer, built.keeper
    changelogs = changelog_topics(settings)
    producer = Producer(
        client_config(
            settings,
            **{
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000,
            },
        )
    )
    messages = ChangelogTable(producer, changelogs["messages"])
    recipients = ChangelogTable(producer, changelogs["recipients"])
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.app_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([*raw_topics, out.events, out.commands])
    collect_garbage_less()  # as the worker does
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))
    next_commit = time.monotonic() + COMMIT_SECONDS
    try:
        while not stopping:
            for message in consumer.consume(BATCH, timeout=0.1):
                if message.error() is not None:
                    continue
                record = source_record(message)
                if record.topic in (out.events, out.commands):
                    recipients.partition = record.partition
                    _publish(producer, keeper.process(record, recipients))
                else:
                    messages.partition = record.partition
                    _publish(producer, normalizer.process(record, messages))
            producer.poll(0)
            if time.monotonic() >= next_commit:
                _publish(producer, keeper.take_bucket_snapshots())
                _commit(producer, consumer)
                next_commit = time.monotonic() + COMMIT_SECONDS
        _publish(producer, keeper.take_bucket_snapshots())
        _commit(producer, consumer)
    finally:
        consumer.close()


def _publish(producer: Producer, outputs: list[Output]) -> None:
    for output in outputs:
        _produce(producer, output.topic, output.key, output.value, headers=output.headers)


def _commit(producer: Producer, consumer: Consumer) -> None:
    """At-least-once: everything produced so far is acknowledged before offsets move."""
    if producer.flush(60) != 0:
        raise RuntimeError("the producer could not deliver the outputs")
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as error:
        if error.args[0].code() != KafkaError._NO_OFFSET:  # nothing consumed since the last commit
            raise


if __name__ == "__main__":
    run(Settings.from_env())
