"""The worker's librdkafka producer (streams/producer.py) on the real broker, outside a worker:
an output's future and a changelog record's callback are settled from the delivery report, keys
land on murmur2's partitions, and `flush()` raises once the broker refused a record, on either
path, so Faust's commit (which awaits it) cannot move past a lost output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import faust
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types.tuples import FutureMessage, RecordMetadata

from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.app import create_app, raw_topic
from mailstream.streams.producer import Producer
from mailstream.streams.records import partition_of
from mailstream.streams.transport import OutputLost
from mailstream.topics import TopicNames

pytestmark = pytest.mark.kafka


@pytest.fixture
async def app(settings: Settings, names: TopicNames, tmp_path: Path) -> AsyncIterator[faust.App]:
    app = create_app(replace(settings, data_dir=tmp_path), default_policy(), web_enabled=False)
    assert isinstance(app.producer, Producer)
    await app.producer.start()
    yield app
    await app.producer.stop()


def changelog_record(app: faust.App, topic: str, sent: list[FutureMessage]) -> FutureMessage:
    return raw_topic(app, topic).as_future_message(
        key=b"recipient-1", value=b"v" * 200, partition=1, callback=sent.append
    )


async def test_outputs_and_changelog_records_are_settled_from_their_delivery_reports(
    app: faust.App, names: TopicNames
) -> None:
    keys = [f"message-{n}".encode() for n in range(20)]
    deliveries = [
        await app.producer.send(names.events, key, b"value", None, None, [("h", b"1")])
        for key in keys
    ]
    sent: list[FutureMessage] = []
    changelog = changelog_record(app, names.events, sent)
    app.producer.send_soon(changelog)
    await app.producer.flush()
    metadata: list[RecordMetadata] = [await delivery for delivery in deliveries]
    assert [m.partition for m in metadata] == [partition_of(key, 2) for key in keys]
    assert sent == [changelog] and changelog.result().partition == 1
    assert changelog.result().offset >= 0


def topic_refusing_every_record(settings: Settings) -> str:
    """A topic created with a 64-byte max.message.bytes (set at creation, so it holds from
    the first write: a later alteration reaches the broker a moment after it is answered)."""
    name = f"{settings.topic_prefix}refusing"
    admin = AdminClient(settings.kafka.librdkafka_config())
    new = NewTopic(name, 2, 1, config={"max.message.bytes": "64"})
    for future in admin.create_topics([new]).values():
        future.result(timeout=30)
    return name


@pytest.mark.parametrize("path", ["send", "send_soon"])
async def test_flush_raises_once_the_broker_refused_a_record(
    app: faust.App, settings: Settings, path: str
) -> None:
    topic = topic_refusing_every_record(settings)
    if path == "send":
        await app.producer.send(topic, b"k", b"v" * 200, None, None, None)
    else:
        app.producer.send_soon(changelog_record(app, topic, []))
    with pytest.raises(OutputLost, match=f"an output to {topic} was not stored"):
        await asyncio.wait_for(app.producer.flush(), 60)
