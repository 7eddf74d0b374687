"""The pipeline on Quix Streams (3.28): the project's own processors (the Normalizer and the
StateKeeper of `mailstream.streams.processors.build_processors`) driven by a Quix
`Application`, with Quix's consumer, producer, state stores, changelogs and checkpoints.
A benchmark peer of the worker and bench/plain_loop.py, doing the same Kafka work:

- one Application (one consumer, one producer) reads the raw topics, email.events and
  email.commands, as the worker's one consumer does;
- each raw topic is a StreamingDataFrame whose records go through the Normalizer; email.events
  and email.commands are concatenated (`sdf.concat`: co-partitioned, one state store for both,
  with Quix's partition time alignment) and go through the StateKeeper;
- their outputs (events, dead letters, states, suppressions, tombstones) are expanded into one
  row each and produced with `to_topic` to the topic each names, with the output's own key and
  headers and the wall clock as timestamp (Quix would otherwise carry the source record's
  timestamp and headers over; the other pipelines produce with the current time);
- the tables live in Quix's RocksDB state stores with changelog topics, one store per
  StreamingDataFrame, checkpointed every COMMIT_SECONDS (Faust's commit interval; producer
  flushed, state flushed to its changelog and RocksDB, then offsets committed: at-least-once).

One difference from Quix's default `apply(..., stateful=True)`: its State prefixes every key
with the message key, while the processors read and write table keys other than the record's
own (the Normalizer keys its table by provider and message id of each event in a raw record).
So the tables here are the same Quix store transactions with an empty prefix: one key space per
partition, as the worker's and the plain loop's tables are (`partition_table`). The stores are
registered with `register_store()`, and the transaction is taken exactly as Quix's stateful
wrapper takes it (the checkpoint's transaction of the record's partition).

Quix pins confluent-kafka < 2.13, so this runs in its own venv (bench/.venv-quix, made by
bench/e2e_bench.py's `quix_python()`), with mailstream installed there without dependencies.
Run by bench/e2e_bench.py; by hand: bench/.venv-quix/bin/python bench/quix_pipeline.py
(MAILSTREAM_* settings from the environment, as for `mailstream worker`; the topics must exist).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer

from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.processors import build_processors, collect_garbage_less
from mailstream.streams.records import Output, SourceRecord
from mailstream.topics import TopicNames

COMMIT_SECONDS = 2.8  # Faust's broker_commit_interval, as in the plain loop

Table = MutableMapping[bytes, dict[str, Any]]
Process = Callable[[SourceRecord, Table], list[Output]]


class StateTable(MutableMapping[bytes, dict[str, Any]]):
    """A processor's table over a Quix State (one partition's store transaction)."""

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    def __getitem__(self, key: bytes) -> dict[str, Any]:
        value: dict[str, Any] | None = self._state.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._state.get(key, default)

    def __setitem__(self, key: bytes, value: dict[str, Any]) -> None:
        self._state.set(key, value)

    def __delitem__(self, key: bytes) -> None:
        if not self._state.exists(key):
            raise KeyError(key)
        self._state.delete(key)

    def __iter__(self) -> Iterator[bytes]:
        raise NotImplementedError("a store transaction is not iterated by the processors")

    def __len__(self) -> int:
        raise NotImplementedError("a store transaction is not counted by the processors")


class OutputValue(Serializer):
    """Serializes an `Output` row: its value as is (None, a tombstone, included)."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes | None:
        return value.value


def partition_table(sdf: StreamingDataFrame) -> Callable[[], Table]:
    """The current record's partition table in `sdf`'s state store (registered here)."""
    sdf.register_store()

    def table() -> Table:
        transaction = sdf.processing_context.checkpoint.get_store_transaction(
            stream_id=sdf.stream_id, partition=message_context().partition
        )
        return StateTable(transaction.as_state(prefix=b""))

    return table


def processed(
    sdf: StreamingDataFrame, process: Process, topics: dict[str, Topic]
) -> StreamingDataFrame:
    """`sdf` through `process`, its outputs produced to their topics."""
    table = partition_table(sdf)

    def run(value: bytes | None, key: bytes | None, timestamp: int, headers: Any) -> list[Output]:
        context = message_context()
        record = SourceRecord(
            context.topic,
            context.partition,
            context.offset,
            timestamp,
            key,
            value,
            tuple(headers or ()),
        )
        return process(record, table())

    outputs = sdf.apply(run, expand=True, metadata=True)
    outputs = outputs.set_headers(lambda output, _key, _ts, _headers: list(output.headers))
    outputs = outputs.set_timestamp(lambda _output, _key, _ts, _headers: int(time.time() * 1000))
    return outputs.to_topic(
        lambda output, _key, _ts, _headers: topics[output.topic], key=lambda output: output.key
    )


def application(settings: Settings) -> Application:
    connection = {
        name: value
        for name, value in settings.kafka.librdkafka_config().items()
        if name != "logger"  # Quix sets its own
    }
    return Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(connection),
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_SECONDS,
        producer_extra_config={
            # as the plain loop's producer
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
        },
        state_dir=settings.data_dir / f"quix-state-{settings.app_id}",
        loglevel="WARNING",
        use_changelog_topics=True,
        processing_guarantee="at-least-once",
    )


def build(settings: Settings) -> Application:
    names = TopicNames(settings.topic_prefix)
    built = build_processors(settings, default_policy())
    app = application(settings)

    def source(name: str) -> StreamingDataFrame:
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        return app.dataframe(topic)

    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=OutputValue())
        for name in (
            names.events,
            names.dead_letters,
            names.recipient_state,
            names.suppressions,
            names.scoped_suppressions,
            names.erasures,
            names.deliverability_buckets,
        )
    }
    # Each raw topic has its own store: the Normalizer's table keys name the provider, so a
    # provider's entries are only ever read from its own topic.
    for provider in PROVIDERS:
        processed(source(names.raw(provider)), built.normalizer.process, outputs)
    keeper = built.keeper

    def state(record: SourceRecord, table: Table) -> list[Output]:
        # No hook before Quix's checkpoint: each event's bucket is published with it.
        return keeper.process(record, table) + keeper.take_bucket_snapshots()

    processed(source(names.events).concat(source(names.commands)), state, outputs)
    return app


if __name__ == "__main__":
    pipeline = build(Settings.from_env())
    collect_garbage_less()  # as the worker does
    pipeline.run()
