"""Helpers for tests that run the real pipeline."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from mailstream.connectors.samples import RawRecord, raw_record
from mailstream.settings import Settings
from mailstream.streams.operations.processes import service, settings_env
from mailstream.topics import TopicNames


@contextlib.contextmanager
def running_worker(
    settings: Settings, log: Path, web_port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    web = ["--web-port", str(web_port)] if web_port else ["--without-web"]
    with service(["worker", *web, "--loglevel", "info"], settings_env(settings), log) as process:
        yield process


def send_envelopes(settings: Settings, envelopes: list[dict]) -> None:
    """Produce webhook bodies as the ingest does: keyed by the provider's message id."""
    names = TopicNames(settings.topic_prefix)
    produce_in_order(settings, [raw_record(names, envelope) for envelope in envelopes])


Coordinates = tuple[str, int, int]  # topic, partition, offset


def produce_in_order(settings: Settings, records: Sequence[RawRecord]) -> list[Coordinates]:
    """Produce `records` in order with one idempotent producer; their coordinates, in order.
    Records up to the broker's 1 MiB limit are allowed (librdkafka's own default is 1 MB)."""
    producer = Producer(
        {
            **settings.kafka.librdkafka_config(),
            "enable.idempotence": True,
            "message.max.bytes": 2**21,
        }
    )
    coordinates: list[Coordinates | None] = [None] * len(records)

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            assert error is None, f"record {index} was not delivered: {error}"
            coordinates[index] = (message.topic(), message.partition(), message.offset())

        return report

    for index, record in enumerate(records):
        producer.produce(record.topic, record.value, record.key, on_delivery=delivered(index))
        producer.poll(0)
    assert producer.flush(30) == 0, "records left undelivered"
    return [c for c in coordinates if c is not None]
