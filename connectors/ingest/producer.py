"""A confluent-kafka producer whose `produce()` is awaited until the broker has the record.

librdkafka's `produce()` only enqueues; the delivery report says whether the write happened.
A background thread serves delivery reports (`poll()` releases the GIL while it waits) and
hands each batch of them to the event loop with one `call_soon_threadsafe`, which settles the
futures the request handlers await. librdkafka itself gives up on a record after
`delivery.timeout.ms`, so the report (success or failure) always arrives: an unanswered record
is never left in the queue to be written after its request was answered 503.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mailstream.errors import ErrorKind, MailstreamError

Report = tuple["asyncio.Future[None]", KafkaError | None]
KafkaHeaders = list[tuple[str, str | bytes | None]]
REPORT_POLL_SECONDS = 0.1
METADATA_TIMEOUT_SECONDS = 2.0


class ProduceError(MailstreamError):
    """Kafka did not confirm a write; `reason` is librdkafka's error name (e.g. _MSG_TIMED_OUT)."""

    default_kind = ErrorKind.KAFKA_UNAVAILABLE

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def producer_config(
    connection: Mapping[str, str | int | float | bool], timeout_seconds: float
) -> dict[str, Any]:
    """Durable writes (acks=all, idempotence) batched briefly for throughput."""
    return {
        **connection,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        # the Java client's partitioner, so a message id maps to the partition any JVM
        # producer on the bus (or a redrive) would choose
        "partitioner": "murmur2_random",
        "delivery.timeout.ms": int(timeout_seconds * 1000),
        # librdkafka's default (10 s) would keep answering 503 long after a broker is back
        "reconnect.backoff.max.ms": 1000,
    }


class AsyncProducer:
    """`await produce(...)` returns once the broker acknowledged the record, or raises
    `ProduceError`. Call `start()` from the event loop, `close()` to flush and stop."""

    def __init__(self, config: dict[str, Any], flush_timeout_seconds: float) -> None:
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._flush_timeout = flush_timeout_seconds
        self._reports: list[Report] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._serve_delivery_reports, name="kafka-delivery-reports", daemon=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fatal_error: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def close(self) -> None:
        """Stop polling after the queued records are delivered (or `flush_timeout` passed),
        then release the librdkafka client."""
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)

    async def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders
    ) -> None:
        if self._loop is None:
            raise RuntimeError("start() the producer first")
        future: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self._reports.append((future, error))

        try:
            self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        except BufferError:
            raise ProduceError("queue_full", "the producer's local queue is full") from None
        except KafkaException as error:
            raise _produce_error(error.args[0]) from None
        await future

    async def metadata_topics(self) -> set[str]:
        """Topic names from a metadata request to the cluster; raises ProduceError if none
        of the brokers answers within METADATA_TIMEOUT_SECONDS."""
        try:
            metadata = await asyncio.to_thread(
                self._producer.list_topics, timeout=METADATA_TIMEOUT_SECONDS
            )
        except KafkaException as error:
            raise _produce_error(error.args[0]) from None
        return set(metadata.topics)

    def _serve_delivery_reports(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(REPORT_POLL_SECONDS)
            self._hand_over_reports()
        self._producer.flush(self._flush_timeout)
        self._producer.purge()  # what is still queued fails (_PURGE_QUEUE) instead of hanging
        self._producer.poll(0)
        self._hand_over_reports()
        self._producer.close()

    def _hand_over_reports(self) -> None:
        """Runs in the polling thread, the only one whose callbacks append to `_reports`."""
        if self._reports and self._loop is not None:
            reports, self._reports = self._reports, []
            self._loop.call_soon_threadsafe(_settle, reports)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal_error = f"{error.name()}: {error.str()}"


def _settle(reports: list[Report]) -> None:
    for future, error in reports:
        if future.done():  # the awaiting handler was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_produce_error(error))


def _produce_error(error: KafkaError) -> ProduceError:
    return ProduceError(error.name(), error.str())
