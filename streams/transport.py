"""Faust's aiokafka transport, with a consumer whose seek after a rebalance cannot make commits
stall.

faust-streaming 0.15 resumes the stream partitions after table recovery and only then seeks them
to their committed offsets (`Recovery.on_recovery_completed`). While that seek waits for the
consumer thread, the fetcher can already hand records from the committed offset to the streams.
Faust's seek then moves the read offset back, so the rest of the batch in flight looks like a gap
in the partition. Faust counts a gap's offsets as processed at its next commit, even those
still queued in a stream, and counts them again when they are acknowledged. The duplicates
then hold commits to one offset per commit interval (robinhood/faust#625). The crash test saw a
restarted worker process everything and commit almost nothing for 30 s.

The seek after resuming still has a job: a fetch that was in flight while the partitions were
paused can return records that Faust discards, and only this seek reads them again. So it
stays, but records already handed to the streams keep their read offset: they sit in the
streams' queues and will be processed. To tell them apart from read offsets of an earlier
assignment, the worker calls `seek_before_resume` from `app.on_rebalance_complete`, which fires
just before the partitions are resumed.

Faust commits an input's offset once its outputs are flushed, but aiokafka's flush does not
report an output the broker refused (too large, not authorized, retries exhausted): the input
would be committed and its outputs lost. The transport's producer (streams/producer.py, on
librdkafka) records every refused record, an agent's output or a changelog record, in
`Deliveries`, and its flush raises the first one; the consumer refuses to commit after one.
Either way the worker stops with the cause, and a restarted worker resumes from the last
commit, before the lost outputs.

Faust builds the aiokafka consumer with `fetch_max_wait_ms=1500`, and aiokafka sends one fetch
at a time to a broker, leaving out every partition whose fetched records the worker has not
taken yet. When the worker is busy, that fetch names only partitions without new records, and
the broker holds it the full 1.5 s while the busy partitions wait for it: the worker went idle
with a backlog every 1.5 s, and at 1,700 raw records/s its latency grew to p50 5 s
(bench/e2e_bench.py). The consumer thread builds the consumer with
`MAILSTREAM_CONSUMER_FETCH_MAX_WAIT_MS` (100 ms) in its place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import cast

from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka
from faust.types import TP, AppT
from yarl import URL

from mailstream.errors import ErrorKind, MailstreamError
from mailstream.settings import KafkaSettings
from mailstream.streams.producer import Producer


class OutputLost(MailstreamError):
    """An output the broker did not store: nothing may be committed after it."""

    default_kind = ErrorKind.OUTPUT_LOST


class Deliveries:
    """The first record the broker refused (an output or a changelog record), kept."""

    def __init__(self) -> None:
        self.failure: OutputLost | None = None

    def refused(self, topic: str, error: BaseException) -> OutputLost:
        if self.failure is None:
            self.failure = OutputLost(
                f"an output to {topic} was not stored ({error!r}); no offset is committed "
                "after it: restart the worker once the cause is fixed, it resumes from the "
                "last commit"
            )
        return self.failure


class ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, which has not happened yet.
        consumer._fetch_max_wait_ms = cast(Transport, transport).fetch_max_wait_ms
        return consumer


class Consumer(aiokafka.Consumer):
    _sources: Collection[str] = ()

    def _new_consumer_thread(self) -> aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_before_resume(self, sources: Collection[str]) -> None:
        """Seek to the committed offsets while the stream partitions are paused, resetting every
        read offset. A source partition without a committed offset (its owner died before its
        first commit) starts from the beginning: otherwise it would stay wherever the records
        dropped during the rebalance left it, past records nobody processed."""
        self._sources = sources
        await super().perform_seek()
        for tp in self._never_committed_sources():
            await self.seek(tp, 0)

    async def perform_seek(self) -> None:
        committed = await self.seek_to_committed()
        # Nothing awaits from here until the read offsets are set: no record is handed out
        # in between.
        handed_out = dict(self._read_offset) if self.flow_active else {}
        for partition, offset in committed.items():
            tp = ensure_TP(partition)
            position = offset if offset is not None and offset >= 0 else None
            last_handed_out = handed_out.get(tp)
            if last_handed_out is not None and (position is None or last_handed_out >= position):
                position = last_handed_out
            self._read_offset[tp] = position
            if offset is not None:
                self._committed_offset[tp] = offset or None
        for tp in self._never_committed_sources():
            await self._seek(tp, 0)  # the position only: records below the read offset are skipped

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        """Faust picks the offsets to commit first thing in here, without waiting: whatever
        `before_commit` sends is sent for every offset committed, and flushed before it."""
        before_commit = self.transport.before_commit  # type: ignore[attr-defined]
        if before_commit is not None:
            await before_commit()
        return bool(await super()._commit_tps(tps, start_new_transaction))

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Called by Faust after its producer flush, so every earlier delivery is known."""
        deliveries: Deliveries = self.transport.deliveries  # type: ignore[attr-defined]
        if deliveries.failure is not None:
            raise deliveries.failure
        return bool(await super()._commit(offsets))

    def lag(self, sources: Collection[str]) -> dict[tuple[str, int], int]:
        """End offset minus committed offset of the assigned partitions of `sources` (not the
        changelogs, which are read, never committed) whose end is known."""
        behind = {}
        for tp in self.assignment():
            if tp.topic not in sources:
                continue
            end = self.highwater(tp)
            if end is not None:
                committed = self._committed_offset.get(tp) or 0
                behind[(tp.topic, tp.partition)] = max(0, end - committed)
        return behind

    def _never_committed_sources(self) -> list[TP]:
        return [
            tp
            for tp in self.assignment()
            if tp.topic in self._sources and self._committed_offset[tp] is None
        ]


class Transport(aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer

    def __init__(
        self, url: list[URL], app: AppT, kafka: KafkaSettings, fetch_max_wait_ms: int
    ) -> None:
        super().__init__(url, app)
        self.kafka = kafka
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.deliveries = Deliveries()
        # Sends what must be stored before any offset is committed; returns once nothing is
        # left to send (the worker's deliverability buckets).
        self.before_commit: Callable[[], Awaitable[None]] | None = None
