"""What the stream processors read and write, independent of Faust.

The processors take a `SourceRecord` and return `Output`s; the Faust agents (streams/app.py)
and the plain confluent-kafka loop of the benchmarks both drive them, so the per-record logic
exists once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from mailstream.codec import AvroCodec
from mailstream.errors import ErrorKind

REDRIVE_COUNT_HEADER = "mailstream.redrive_count"  # set by `mailstream dlq redrive`
MAX_DEAD_LETTER_PAYLOAD = 512 * 1024  # Kafka's default record limit is 1 MiB
PAYLOAD_CUT_NOTE = "payload cut to its first"
# A dead letter keeps the source's headers for a redrive, within bounds (a hostile record
# may carry thousands); the message says when some were left out.
MAX_DEAD_LETTER_HEADERS = 64
MAX_DEAD_LETTER_HEADER_BYTES = 64 * 1024
MAX_ERROR_MESSAGE_CHARS = 4000


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int | None  # epoch ms of the Kafka record
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def int_header(self, name: str) -> int | None:
        """A header holding a non-negative integer (at most 18 ASCII digits); None when it is
        absent or holds anything else: headers come from whoever wrote the record."""
        value = self.header(name)
        if value is None or not 0 < len(value) <= 18 or not value.isdigit():
            return None
        return int(value)


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None  # None is a tombstone (compacted topics)
    headers: tuple[tuple[str, bytes], ...] = ()
    # For the worker's metrics (streams/metrics.py), not written to Kafka: the event type, the
    # dead letter's kind, the suppression's reason; a state's event and receive times.
    label: str = ""
    received_at: int | None = None
    occurred_at: int | None = None


def dead_letter(
    codec: AvroCodec,
    dead_letter_topic: str,
    source: SourceRecord,
    error_kind: ErrorKind,
    error_message: str,
    provider: str | None,
) -> Output:
    """The record of one input that could not be processed, with its cause and coordinates.
    A payload over MAX_DEAD_LETTER_PAYLOAD is cut (the message says so): the whole record stays
    at its coordinates, and the dead letter must fit in a Kafka record itself."""
    payload = source.value if source.value is not None else b""
    error_message = error_message[:MAX_ERROR_MESSAGE_CHARS]
    headers, left_out = _kept_headers(source.headers)
    if left_out:
        error_message += f" ({left_out} of {len(source.headers)} headers left out)"
    if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
        error_message += (
            f" ({PAYLOAD_CUT_NOTE} {MAX_DEAD_LETTER_PAYLOAD} of {len(payload)} bytes; the whole "
            f"record is {source.topic} partition {source.partition} offset {source.offset})"
        )
        payload = payload[:MAX_DEAD_LETTER_PAYLOAD]
    record: dict[str, Any] = {
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "source_timestamp": source.timestamp,
        "key": source.key,
        "payload": payload,
        "headers": headers,
        "error_kind": error_kind,
        "error_message": error_message,
        "failed_at": int(time.time() * 1000),
        "provider": provider,
        "redrive_count": source.int_header(REDRIVE_COUNT_HEADER) or 0,
    }
    return Output(dead_letter_topic, source.key, codec.encode(record), label=error_kind)


def _kept_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[dict[str, bytes], int]:
    """The headers a dead letter keeps, and how many of the source's it left out."""
    kept: dict[str, bytes] = {}
    size = 0
    for number, (name, value) in enumerate(headers):
        size += len(name) + len(value or b"")
        if number >= MAX_DEAD_LETTER_HEADERS or size > MAX_DEAD_LETTER_HEADER_BYTES:
            return kept, len(headers) - number
        kept[name] = value or b""
    return kept, 0


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Faust's and the Java client's)
    gives `key`."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def payload_was_cut(dead_letter_record: dict[str, Any]) -> bool:
    """Whether `dead_letter` kept only the start of its source record's payload."""
    return (
        len(dead_letter_record["payload"]) == MAX_DEAD_LETTER_PAYLOAD
        and PAYLOAD_CUT_NOTE in dead_letter_record["error_message"]
    )
