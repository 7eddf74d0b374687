"""A confluent-kafka producer whose `produce()` is awaited until the broker has the record.

librdkafka's `produce()` only enqueues; the delivery report says whether the write happened.
A background thread serves delivery reports (`poll()` releases the GIL while it waits) and
hands each batch of them to the event loop with one `call_soon_threadsafe`, which settles the
futures the request handlers await. librdkafka itself gives up on a record after
`delivery.timeout.ms`, so the report (success or failure) always arrives: an unanswered record
is never left in the queue to be written after its request was answered 503.

While librdkafka reports that no broker is reachable (_ALL_BROKERS_DOWN), `produce()` fails at
once instead of queueing a record that would wait the whole delivery timeout; a metadata probe
every PROBE_INTERVAL_SECONDS (and any acknowledgement or metadata answer) ends that state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mailstream.errors import ErrorKind, MailstreamError

Report = tuple["asyncio.Future[None]", KafkaError | None]
KafkaHeaders = list[tuple[str, str | bytes | None]]
REPORT_POLL_SECONDS = 0.1
METADATA_TIMEOUT_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 0.5
PROBE_TIMEOUT_SECONDS = 1.0  # short: close() waits for a probe's metadata call to end
# The broker's (or librdkafka's own) refusals of a record for its size: answered 413, not 503.
SIZE_REFUSALS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
ALL_BROKERS_DOWN = "_ALL_BROKERS_DOWN"

log = logging.getLogger("mailstream.ingest")


class ProduceError(MailstreamError):
    """Kafka did not confirm a write; `reason` is librdkafka's error name (e.g. _MSG_TIMED_OUT).
    Its kind is kafka_unavailable, or too_large when Kafka refused the record for its size."""

    default_kind = ErrorKind.KAFKA_UNAVAILABLE

    def __init__(self, reason: str, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message, kind)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def producer_config(
    connection: Mapping[str, str | int | float | bool],
    timeout_seconds: float,
    *,
    max_record_bytes: int,
) -> dict[str, Any]:
    """Durable writes (acks=all, idempotence) batched briefly for throughput, of records up to
    `max_record_bytes` (librdkafka's default, 1,000,000, is below a 1 MiB body)."""
    return {
        **connection,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": max_record_bytes,
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
        self._probe: asyncio.Task[None] | None = None
        self.fatal_error: str | None = None
        # librdkafka's description of the outage while no broker is reachable, else None.
        self.unreachable: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def close(self) -> None:
        """Stop polling after the queued records are delivered (or `flush_timeout` passed),
        then release the librdkafka client."""
        self._stopping.set()
        if self._probe is not None:  # not cancelled: its metadata call must end before close
            await self._probe
        await asyncio.to_thread(self._thread.join)

    def mark_unreachable(self, description: str) -> None:
        """No broker is reachable: fail writes at once, and probe until one answers."""
        if self.unreachable is None:
            log.warning("Kafka is unreachable (%s): webhooks are answered 503 at once", description)
        self.unreachable = description
        if (self._probe is None or self._probe.done()) and not self._stopping.is_set():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_reachable())

    def mark_reachable(self) -> None:
        if self.unreachable is not None:
            log.info("Kafka is reachable again")
        self.unreachable = None

    async def _probe_until_reachable(self) -> None:
        while self.unreachable is not None and not self._stopping.is_set():
            try:
                await self.metadata_topics(PROBE_TIMEOUT_SECONDS)  # marks it reachable
            except ProduceError:
                await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            except Exception:  # a dead probe would leave every webhook refused: keep probing
                log.exception("the Kafka reachability probe failed")
                await asyncio.sleep(PROBE_INTERVAL_SECONDS)

    async def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders
    ) -> None:
        if self._loop is None:
            raise RuntimeError("start() the producer first")
        if self.unreachable is not None:
            raise ProduceError(ALL_BROKERS_DOWN, self.unreachable)
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

    async def metadata_topics(self, timeout: float = METADATA_TIMEOUT_SECONDS) -> set[str]:
        """Topic names from a metadata request to the cluster; raises ProduceError if none
        of the brokers answers within `timeout` seconds."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, timeout=timeout)
        except KafkaException as error:
            raise _produce_error(error.args[0]) from None
        self.mark_reachable()
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
            self._loop.call_soon_threadsafe(self._settle_reports, reports)

    def _settle_reports(self, reports: list[Report]) -> None:
        if any(error is None for _, error in reports):
            self.mark_reachable()
        _settle(reports)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error_cb, in the polling thread. _TRANSPORT concerns one connection
        (another broker may still take the writes); _ALL_BROKERS_DOWN is the whole cluster."""
        description = f"{error.name()}: {error.str()}"
        if error.fatal():
            log.error("the Kafka producer failed: %s", description)
            self.fatal_error = description
        elif error.code() == KafkaError._ALL_BROKERS_DOWN and self._loop is not None:
            self._loop.call_soon_threadsafe(self.mark_unreachable, description)


def _settle(reports: list[Report]) -> None:
    for future, error in reports:
        if future.done():  # the awaiting handler was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_produce_error(error))


def _produce_error(error: KafkaError) -> ProduceError:
    kind = ErrorKind.TOO_LARGE if error.code() in SIZE_REFUSALS else None
    return ProduceError(error.name(), error.str(), kind)
