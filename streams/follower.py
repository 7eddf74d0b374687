"""Following a topic from its beginning in a background thread, for in-memory copies of
compacted topics (the downstream suppression list, the worker's set of erased addresses).

Importable without Faust: confluent-kafka is imported when a follower starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailstream.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

# Called with each record's key and value (None: a tombstone), in the follower's thread.
RecordHandler = Callable[[bytes | None, bytes | None], None]


class TopicFollower:
    """Reads every partition of `topic` from the beginning (assigned, no consumer group,
    nothing committed), hands each record to `on_record` and keeps following, so a new record
    is seen within a poll. `wait_until_caught_up` returns once the end offsets as of the
    start are read."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_record: RecordHandler,
        *,
        purpose: str,
        poll_seconds: float = 0.2,
    ) -> None:
        from mailstream.streams.reader import throwaway_consumer

        self.topic = topic
        self._on_record = on_record
        self._poll_seconds = poll_seconds
        self._consumer: Consumer = throwaway_consumer(
            settings, purpose, **{"enable.partition.eof": True}
        )
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._failure: BaseException | None = None
        self._behind = self._assign_from_beginning()
        if not self._behind:
            self._caught_up.set()
        self._thread = threading.Thread(target=self._follow, name=f"{purpose} {topic}", daemon=True)
        self._thread.start()

    def wait_until_caught_up(self, timeout: float) -> None:
        """Return once the topic's end offsets as of the start are read; TimeoutError
        otherwise, or the error that stopped the reader."""
        deadline = time.monotonic() + timeout
        while not self._caught_up.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            self._raise_failure()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.topic}: not caught up within {timeout} s")
        self._raise_failure()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _assign_from_beginning(self) -> dict[int, int]:
        """Assign every partition at its start; returns partition -> end offset still to read."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        from mailstream.streams.reader import watermark_offsets

        metadata = self._consumer.list_topics(self.topic, timeout=15).topics[self.topic]
        if metadata.error is not None:
            self._consumer.close()
            raise KafkaException(metadata.error)
        behind = {}
        for partition in metadata.partitions:
            low, high = watermark_offsets(self._consumer, TopicPartition(self.topic, partition))
            if low < high:
                behind[partition] = high
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        )
        return behind

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(500, timeout=self._poll_seconds):
                    self._apply(message)
        except BaseException as error:
            self._failure = error
        finally:
            self._consumer.close()

    def _apply(self, message: Message) -> None:
        from confluent_kafka import KafkaError, KafkaException

        error = message.error()
        if error is not None and error.fatal():
            raise KafkaException(error)  # other errors are transient: librdkafka retries
        if error is None:
            self._on_record(message.key(), message.value())
        reached_end = error is not None and error.code() == KafkaError._PARTITION_EOF
        partition = message.partition() or 0
        if partition in self._behind and (
            reached_end or (message.offset() or 0) >= self._behind[partition] - 1
        ):
            del self._behind[partition]
            if not self._behind:
                self._caught_up.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
