"""`SuppressionList` against the real broker: reads the compacted topic from the beginning,
honours tombstones and keeps following after it has caught up; a tenant's suppression holds
for that tenant only, a global one for everyone."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from mailstream.codec import codec_for
from mailstream.connectors.registry import PROVIDERS
from mailstream.settings import Settings
from mailstream.streams.recipients import scoped_suppression_key
from mailstream.streams.suppression_list import SuppressionList
from mailstream.topics import TopicNames, create_topics, topic_specs

pytestmark = pytest.mark.kafka

SUPPRESSION = codec_for("suppression")
T0 = 1_700_000_000_000


def suppression(recipient: str, reason: str, tenant: str | None = None) -> bytes:
    return SUPPRESSION.encode(
        {
            "recipient": recipient,
            "reason": reason,
            "since": T0,
            "event_id": "e1",
            "source": "event",
            "actor": None,
            "note": None,
            "scope": "TENANT" if tenant else "GLOBAL",
            "tenant": tenant,
        }
    )


def produce(
    settings: Settings, records: list[tuple[str, bytes | None]], tenant: str | None = None
) -> None:
    """Records on email.suppressions.scoped, keyed as the worker keys them."""
    producer = Producer(settings.kafka.librdkafka_config())
    for recipient, value in records:
        producer.produce(
            TopicNames(settings.topic_prefix).scoped_suppressions,
            key=scoped_suppression_key(recipient, tenant),
            value=value,
        )
    assert producer.flush(30) == 0


def test_follows_suppressions_from_the_beginning_and_after_catching_up(settings: Settings) -> None:
    create_topics(settings, topic_specs(settings, PROVIDERS))
    produce(
        settings,
        [
            ("gone@example.com", suppression("gone@example.com", "HARD_BOUNCE")),
            ("cy@example.com", suppression("cy@example.com", "COMPLAINT")),
            ("lifted@example.com", suppression("lifted@example.com", "MANUAL")),
            ("lifted@example.com", None),
            ("odd@example.com", b"\xc3\x01 written by a newer schema"),
        ],
    )
    produce(
        settings,
        [
            ("ten@example.com", suppression("ten@example.com", "UNSUBSCRIBE", "news")),
            ("gone@example.com", suppression("gone@example.com", "COMPLAINT", "news")),
        ],
        tenant="news",
    )
    with SuppressionList(settings) as suppressions:
        suppressions.wait_until_caught_up(timeout=30)
        assert suppressions.is_suppressed("  Gone@Example.COM ")
        assert suppressions.reason("gone@example.com") == "HARD_BOUNCE"
        assert suppressions.reason("cy@example.com") == "COMPLAINT"
        assert not suppressions.is_suppressed("lifted@example.com")
        assert suppressions.reason("lifted@example.com") is None
        assert suppressions.reason("odd@example.com") == "UNKNOWN", (
            "unreadable counts as suppressed"
        )
        assert not suppressions.is_suppressed("new@example.com")
        assert suppressions.is_suppressed("ten@example.com", tenant="news")
        assert not suppressions.is_suppressed("ten@example.com", tenant="billing")
        assert suppressions.is_suppressed("ten@example.com"), "any scope, for a tenant-less sender"
        assert suppressions.reason("ten@example.com", tenant="news") == "UNSUBSCRIBE"
        assert suppressions.reason("gone@example.com", tenant="billing") == "HARD_BOUNCE"
        assert suppressions.reason("gone@example.com", tenant="news") == "HARD_BOUNCE", (
            "the global suppression is named first"
        )
        assert len(suppressions) == 4

        produce(
            settings,
            [
                ("new@example.com", suppression("new@example.com", "UNSUBSCRIBE")),
                ("cy@example.com", None),
            ],
        )
        deadline = time.monotonic() + 30
        while suppressions.is_suppressed("cy@example.com") or not suppressions.is_suppressed(
            "new@example.com"
        ):
            assert time.monotonic() < deadline, "records produced after catch-up were not seen"
            time.sleep(0.05)
        assert suppressions.reason("new@example.com") == "UNSUBSCRIBE"


def test_an_empty_topic_is_caught_up_at_once_and_a_bootstrap_string_is_enough(
    settings: Settings,
) -> None:
    create_topics(settings, topic_specs(settings, PROVIDERS))
    topic = TopicNames(settings.topic_prefix).suppressions  # unscoped: read as global
    with SuppressionList(settings.kafka.bootstrap_servers, topic=topic) as suppressions:
        suppressions.wait_until_caught_up(timeout=10)
        assert len(suppressions) == 0
