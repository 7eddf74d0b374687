"""Faust's producer on librdkafka (confluent-kafka): the agents' outputs and the tables'
changelogs are sent by one confluent-kafka producer, served on the event loop.

aiokafka batches and encodes every record in Python on the event loop; it was a third of the
worker's CPU per event (issue 13). librdkafka does that in its own threads. Its delivery reports
are served where `poll()` runs: the event loop polls without waiting, after each send and every
POLL_INTERVAL_SECONDS, so a report settles its future in place, without a hop between threads.

Faust writes a table's changelog with `send_soon`, from a synchronous `__setitem__`: its buffer
queues the record and a task per record hands it to `send`. Here `send_soon` enqueues the
record in librdkafka at once, and its delivery report resolves the FutureMessage and calls the
table's callback, from which the RocksDB store records the changelog offset it holds. While
librdkafka's queue is full (a broker away), records wait in `_overflow`, in order, and the
polling task enqueues them as room frees up; `send` awaits room the same way. Nothing waits on
librdkafka synchronously on the event loop.

Faust commits an input's offset after `flush()`, which returns once every record sent before
it was delivered. A record the broker refused is an output lost: `flush()` raises (the
transport's `Deliveries` keeps the first failure), so the commit never moves past it, whether
the record was an agent's output or a changelog record.

The aiokafka producer Faust starts stays, idle, for what Faust asks it besides sending: topic
creation, `key_partition` (its partitioner is the Java client's murmur2, as is librdkafka's
`murmur2_random` set here: `records.partition_of` and the co-partitioning of email.events and
email.commands rely on it) and the header support check. Transactions are not used.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as RdKafkaProducer
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka
from faust.types import TP, HeadersArg
from faust.types.tuples import FutureMessage, RecordMetadata
from mode import Service

if TYPE_CHECKING:
    from mailstream.streams.transport import Transport

POLL_INTERVAL_SECONDS = 0.005
FLUSH_STEP_SECONDS = 0.002
QUEUE_FULL_RETRY_SECONDS = 0.01
STOP_FLUSH_SECONDS = 10.0

log = logging.getLogger(__name__)

Report = Callable[[KafkaError | None, Message], None]


class Producer(aiokafka.Producer):
    _rdkafka: RdKafkaProducer | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._overflow: deque[FutureMessage] = deque()

    def librdkafka_config(self) -> dict[str, Any]:
        transport: Transport = self.transport  # type: ignore[assignment]
        return {
            **transport.kafka.librdkafka_config(),
            "client.id": self.client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": self.linger_ms,
            "message.max.bytes": self.max_request_size,
            "partitioner": "murmur2_random",
            "delivery.timeout.ms": int(self.request_timeout * 1000),
            # librdkafka's default (10 s) would leave the worker idle long after a broker is back
            "reconnect.backoff.max.ms": 1000,
        }

    async def on_start(self) -> None:
        self._rdkafka = RdKafkaProducer(self.librdkafka_config())
        await super().on_start()

    async def on_stop(self) -> None:
        """Deliver what is queued for at most STOP_FLUSH_SECONDS; what is left then fails
        (its input was not committed: the commit before stopping awaited a flush)."""
        rdkafka = self._rdkafka
        if rdkafka is not None:
            try:
                await asyncio.wait_for(self._delivered_all(), STOP_FLUSH_SECONDS)
            except TimeoutError:
                log.warning("stopping with %d records undelivered", len(rdkafka))
            rdkafka.purge()
            rdkafka.poll(0)
        await super().on_stop()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[RecordMetadata]:
        if transactional_id is not None:
            raise NotImplementedError("the librdkafka producer has no transactions")
        future: asyncio.Future[RecordMetadata] = self.loop.create_future()
        report = partial(self._on_delivery, future)
        while True:
            try:
                self._produce(topic, key, value, partition, timestamp, headers, report)
            except BufferError:  # librdkafka's queue is full: wait for room, off the loop
                await asyncio.sleep(QUEUE_FULL_RETRY_SECONDS)
            except KafkaException as error:
                raise ProducerSendError(f"Error while sending: {error!r}") from error
            else:
                return future

    async def send_output(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: HeadersArg | None,
    ) -> None:
        """An agent's output, with no future to settle: nothing awaits one, and a refusal
        is recorded in the transport's `Deliveries` (flush raises it)."""
        while True:
            try:
                self._produce(topic, key, value, None, None, headers, self._on_output_delivery)
            except BufferError:
                await asyncio.sleep(QUEUE_FULL_RETRY_SECONDS)
            except KafkaException as error:
                raise ProducerSendError(f"Error while sending: {error!r}") from error
            else:
                return

    async def send_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        *,
        transactional_id: str | None = None,
    ) -> RecordMetadata:
        sent = await self.send(
            topic, key, value, partition, timestamp, headers, transactional_id=transactional_id
        )
        return await sent

    def send_soon(self, fut: FutureMessage) -> None:
        if self._overflow or not self._produce_soon(fut):
            self._overflow.append(fut)

    async def flush(self) -> None:
        """Return once every record sent so far is delivered; raise if any was lost."""
        await self._delivered_all()
        self._raise_if_lost()

    async def _delivered_all(self) -> None:
        rdkafka = self._client()
        self._enqueue_overflow()
        while rdkafka.flush(0) or self._overflow:  # flush(0): send now, serve the reports
            await asyncio.sleep(FLUSH_STEP_SECONDS)
            self._enqueue_overflow()

    @Service.task
    async def _serve_delivery_reports(self) -> None:
        rdkafka = self._client()
        while not self.should_stop:
            self._enqueue_overflow()
            rdkafka.poll(0)
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

    def _client(self) -> RdKafkaProducer:
        if self._rdkafka is None:
            raise RuntimeError("the librdkafka producer is not started")
        return self._rdkafka

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        report: Report,
    ) -> None:
        rdkafka = self._client()
        rdkafka.produce(
            topic,
            value,
            key,
            partition=-1 if partition is None else partition,
            on_delivery=report,
            timestamp=int(timestamp * 1000) if timestamp else 0,
            headers=_headers(headers),
        )
        rdkafka.poll(0)

    def _produce_soon(self, fut: FutureMessage) -> bool:
        """Enqueue a changelog record; False while librdkafka's queue is full (or not yet
        started). A record librdkafka refuses outright is an output lost."""
        if self._rdkafka is None:
            return False
        message = fut.message
        topic = message.channel.get_topic_name()
        report = partial(self._on_changelog_delivery, fut)
        try:
            self._produce(
                topic,
                message.key,
                message.value,
                message.partition,
                message.timestamp,
                message.headers,
                report,
            )
        except BufferError:
            return False
        except KafkaException as error:
            self._lost(topic, error)
            fut.set_exception(error)
        return True

    def _enqueue_overflow(self) -> None:
        overflow = self._overflow
        while overflow and self._produce_soon(overflow[0]):
            overflow.popleft()

    def _on_delivery(
        self, future: asyncio.Future[RecordMetadata], error: KafkaError | None, message: Message
    ) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(_metadata(message))
        else:
            exception = KafkaException(error)
            self._lost(str(message.topic()), exception)
            future.set_exception(exception)

    def _on_output_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._lost(str(message.topic()), KafkaException(error))

    def _on_changelog_delivery(
        self, fut: FutureMessage, error: KafkaError | None, message: Message
    ) -> None:
        if error is not None:
            exception = KafkaException(error)
            self._lost(str(message.topic()), exception)
            fut.set_exception(exception)
            return
        fut.set_result(_metadata(message))
        callback = fut.message.callback
        if callback is not None:
            callback(fut)

    def _lost(self, topic: str, error: BaseException) -> None:
        transport: Transport = self.transport  # type: ignore[assignment]
        transport.deliveries.refused(topic, error)

    def _raise_if_lost(self) -> None:
        transport: Transport = self.transport  # type: ignore[assignment]
        if transport.deliveries.failure is not None:
            raise transport.deliveries.failure


def _headers(headers: HeadersArg | None) -> list[tuple[str, str | bytes | None]] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in items]


def _metadata(message: Message) -> RecordMetadata:
    topic, partition = str(message.topic()), int(message.partition() or 0)
    _, timestamp_ms = message.timestamp()
    return RecordMetadata(
        topic, partition, TP(topic, partition), int(message.offset() or 0), timestamp_ms / 1000
    )
