"""The Faust application: two agents over two tables, built from settings in a function.

    email.raw.<provider> ──normalize──▶ email.events ──state──▶ email.recipient-state
      (table: messages)     └──▶ email.events.dlq   ▲  (table: recipients) ├──▶ email.suppressions
                                 email.commands ────┘  (operators, sweep)  ├──▶ email.erasures
                                                                            ▼
          email.deliverability ◀──(timer)── deliverability ◀── email.deliverability.buckets
                                   (table: deliverability) ──▶ email.alerts

With an erasure key, the set of erased addresses is read from email.erasures to its end (and
the key checked against the one that hashed them; `mailstream worker` refuses to start without
a key while email.erasures holds erasures) before
the app is built (so no agent processes a record of an erased address first), then followed.

Both agents run with concurrency 1: faust-streaming can commit an offset past an unfinished
event when an agent runs concurrently (faust-streaming issue 606).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.types import TP, StreamT, TableT, TopicT

from mailstream.codec import service_codec
from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import Policy
from mailstream.settings import Settings
from mailstream.streams.dashboard import add_dashboard
from mailstream.streams.dashboard_sources import DashboardSources
from mailstream.streams.deliverability import DeliverabilityWindows
from mailstream.streams.metrics import WorkerMetrics, add_metrics_page
from mailstream.streams.processors import build_processors
from mailstream.streams.producer import Producer
from mailstream.streams.queries import add_queries
from mailstream.streams.reader import live_keys, read_to_end
from mailstream.streams.records import Output, SourceRecord
from mailstream.streams.sweep import add_inactivity_sweep
from mailstream.streams.transport import Consumer, Transport
from mailstream.topics import TABLES, TopicNames

# The tables' values are the JSON records of MessageInfo and RecipientState.
RecordTable = TableT[bytes, dict[str, Any]]


def raw_topic(app: faust.App, *names: str) -> TopicT:
    """Topics of undecoded bytes: the processors decode (and dead-letter) themselves."""
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_app(settings: Settings, policy: Policy, *, web_enabled: bool = True) -> faust.App:
    names = TopicNames(settings.topic_prefix)
    datadir = settings.data_dir / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        **settings.kafka.faust_broker_options(),
        autodiscover=False,
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        consumer_auto_offset_reset="earliest",
        web_enabled=web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.transport = transport = Transport(
        app.conf.broker_consumer, app, settings.kafka, settings.consumer_fetch_max_wait_ms
    )
    deliveries = transport.deliveries
    metrics = WorkerMetrics(names)
    processors = build_processors(settings, policy)
    normalizer, keeper = processors.normalizer, processors.keeper
    if processors.erased.key is not None:
        processors.erased.load(settings)
    # key_type=bytes on the table itself: its store encodes keys with the table's own key type
    # and serializer (json by default), not the schema's; without it, keys restored from the
    # changelog did not match live keys after a restart (tests/reliability found it).
    table_schema: faust.Schema[bytes, Any] = faust.Schema(
        key_type=bytes, key_serializer="raw", value_serializer="json"
    )
    messages_table, recipients_table, deliverability_table = TABLES
    messages: RecordTable = app.Table(
        messages_table, key_type=bytes, schema=table_schema, partitions=settings.partitions
    )
    recipients: RecordTable = app.Table(
        recipients_table, key_type=bytes, schema=table_schema, partitions=settings.partitions
    )
    buckets: RecordTable = app.Table(
        deliverability_table, key_type=bytes, schema=table_schema, partitions=1
    )
    windows = DeliverabilityWindows(
        names,
        policy.deliverability,
        service_codec(settings, "deliverability"),
        service_codec(settings, "deliverability_alert"),
        service_codec(settings, "dead_letter"),
        metrics.registry,
    )

    async def publish(source: str, records: list[Output]) -> None:
        """The outputs of one record of `source` (counted in the metrics), sent."""
        metrics.count(source, records)
        await send(records)

    async def send(records: list[Output]) -> None:
        """Hand the outputs to the producer at once. Faust flushes it before every offset
        commit, so an input is never committed before its outputs are stored (at least once).
        `Topic.send` inside an agent would route each output through Faust's per-event
        attachment bookkeeping instead, at several times the cost (bench/e2e_bench.py)."""
        producer = cast(Producer, app.producer)
        for output in records:
            try:
                await producer.send_output(
                    output.topic, output.key, output.value, list(output.headers) or None
                )
            except Exception as error:
                raise deliveries.refused(output.topic, error) from error

    @app.agent(raw_topic(app, *(names.raw(p) for p in PROVIDERS)), name="normalize")
    async def normalize(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            record = source_record(event.message)
            await publish(record.topic, normalizer.process(record, messages))

    @app.agent(raw_topic(app, names.events, names.commands), name="state")
    async def state(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            record = source_record(event.message)
            await publish(record.topic, keeper.process(record, recipients))

    async def publish_bucket_snapshots() -> None:
        """Until none is left: nothing may be awaited between the last check and the
        choice of the offsets to commit (streams/transport.py)."""
        while snapshots := keeper.take_bucket_snapshots():
            await send(snapshots)

    transport.before_commit = publish_bucket_snapshots

    @app.agent(raw_topic(app, names.deliverability_buckets), name="deliverability")
    async def deliverability(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            record = source_record(event.message)
            await publish(record.topic, windows.process(record, buckets))

    @app.timer(interval=settings.deliverability_interval_seconds, name="deliverability_publish")  # type: ignore[untyped-decorator]
    async def publish_windows() -> None:
        if TP(names.deliverability_buckets, 0) not in app.consumer.assignment():
            windows.forget()  # another worker owns the buckets now
        elif windows.loaded:  # loaded once the table is recovered (below)
            await send(windows.publishable())

    sources = {
        *(names.raw(p) for p in PROVIDERS),
        names.events,
        names.commands,
        names.deliverability_buckets,
    }

    # mode types its handlers with mypy_extensions callables that no coroutine function matches
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def seek_before_streams_resume(sender: faust.App, **_: Any) -> None:
        consumer = sender.consumer
        if not isinstance(consumer, Consumer):
            raise TypeError(f"the worker needs mailstream's consumer, not {type(consumer)}")
        await consumer.seek_before_resume(sources)
        metrics.rebalances.inc()
        # The table is recovered by now; the partition may have been elsewhere in between.
        windows.forget()
        if TP(names.deliverability_buckets, 0) in consumer.assignment():
            published = await asyncio.get_running_loop().run_in_executor(
                None, read_to_end, settings, names.deliverability
            )
            await send([*windows.load(buckets), *windows.stale(live_keys(published))])

    def lag() -> dict[tuple[str, int], int]:
        return app.consumer.lag(sources) if isinstance(app.consumer, Consumer) else {}

    metrics.watch(
        lag,
        {
            "messages": lambda: len(messages),
            "recipients": lambda: len(recipients),  # with its deliverability buckets
            "deliverability": lambda: len(buckets),
        },
        lambda: normalizer.erased_dropped + keeper.erased_dropped,
        lambda: keeper.uncounted,
    )
    add_metrics_page(app, metrics)
    add_queries(app, recipients, processors.erased, settings.web_token)
    dashboard = DashboardSources(
        settings, policy.deliverability, recipients, processors.erased, lag
    )
    add_dashboard(app, dashboard.collect)
    if settings.sweep_interval_seconds > 0:
        add_inactivity_sweep(
            app,
            recipients,
            raw_topic(app, names.commands),
            service_codec(settings, "operator_command"),
            policy,
            settings.sweep_interval_seconds,
        )
    return app


def source_record(message: Any) -> SourceRecord:
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp and int(message.timestamp * 1000),
        key=message.key,
        value=message.value,
        headers=[
            (name if isinstance(name, str) else name.decode(), value)
            for name, value in (message.headers or ())
        ],
    )
