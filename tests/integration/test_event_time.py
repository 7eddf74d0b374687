"""Event time on the real broker: order-sensitive streams (soft bounces around a delivery, the
30-day reset, the first cause of a suppression, a manual lift after a bounce) arrive with each
webhook its own message, out of event-time order. The live worker, `mailstream replay --yes`,
and a second worker taking over after a SIGKILL during a backlog all publish the same states,
equal to `mailstream simulate`'s (which knows no operator command: the lifted recipient is
compared between the runs)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from mailstream.cli import main
from mailstream.codec import codec_for
from mailstream.connectors.base import Sample, SampleKind
from mailstream.connectors.registry import PROVIDERS, get_provider
from mailstream.connectors.samples import campaign_rounds, raw_record
from mailstream.policy import Policy, default_policy, load_policy
from mailstream.recipient import RecipientState, apply
from mailstream.settings import Settings
from mailstream.streams.deliverability import DeliverabilityWindows
from mailstream.streams.operations.processes import kill
from mailstream.streams.processors import build_processors
from mailstream.streams.reader import latest_by_key, read_to_end, read_until
from mailstream.streams.records import SourceRecord
from mailstream.streams.simulate import parse_envelope
from mailstream.topics import (
    Partition,
    TopicNames,
    committed_offsets,
    create_topics,
    list_offsets,
    partitions_of,
    topic_specs,
)
from tests.integration.harness import running_worker, send_envelopes
from tests.integration.test_deliverability import deliverability_policy
from tests.integration.test_replay import expected_states, published, replay, wait_for_states

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
LIFTED = "lifted@example.com"
RESET = "reset@example.com"
OFFER = "https://example.com/offer"
ALERT = codec_for("deliverability_alert")
LONG_WINDOWS = deliverability_policy("[1h, 1d, 7d, 8w]", minimum_volume=1000)


def webhook(kind: SampleKind, address: str, at: int, number: int) -> dict[str, Any]:
    """One webhook, its own message (so its own raw partition, whatever the others'). Opens
    and clicks come from SendGrid, whose events name the recipient: no delivery of their
    message is needed to resolve it (and none makes them machine events)."""
    provider = {"hard": "inboxroad", "soft": "inboxroad", "open": "sendgrid", "click": "sendgrid"}
    payload = get_provider(provider.get(kind, "maileroo")).sample(
        Sample(kind, address, f"{address}-{number}@mail", at, f"{address}-{number}", OFFER)
    )
    assert payload is not None
    return {"provider": provider.get(kind, "maileroo"), "payload": payload}


def order_sensitive() -> list[dict[str, Any]]:
    """In arrival order, which is not event-time order."""
    soft = [webhook("soft", "soft@example.com", T0 + n * HOUR, n) for n in (0, 1, 3, 4, 5)]
    delivery = webhook("delivered", "soft@example.com", T0 + 2 * HOUR, 2)
    limit = [webhook("soft", "cause@example.com", T0 + n * HOUR, n) for n in range(1, 6)]
    hard = webhook("hard", "cause@example.com", T0, 0)
    return [
        *soft,
        delivery,  # between the 2nd and 3rd bounce: never five in a row
        # A human open 40 days after a human click, sent first: by event time the open comes
        # more than inactivity_reset_days after the last signal and resets the click's score.
        webhook("open", RESET, T0 + 40 * DAY, 2),
        webhook("click", RESET, T0, 1),
        *limit,
        hard,  # earlier than the soft-bounce limit: the first cause
        webhook("hard", LIFTED, T0, 0),
    ]


def arrival(seed: int) -> list[dict[str, Any]]:
    """The order-sensitive cases, then a campaign (some 1,100 webhooks); the crash run sends
    the second half after the worker's first commit, so it is killed with a backlog."""
    [campaign] = campaign_rounds(600, rounds=1, seed=seed)
    return [*order_sensitive(), *campaign]


def copy_commands(source: Settings, target: Settings) -> None:
    """The operator commands of `source`, as written, onto `target`'s commands topic."""
    producer = Producer(target.kafka.librdkafka_config())
    for record in read_to_end(source, TopicNames(source.topic_prefix).commands):
        producer.produce(
            TopicNames(target.topic_prefix).commands,
            record.value,
            record.key,
            partition=record.partition,
            timestamp=record.timestamp or 0,
            headers=list(record.headers),
        )
    assert producer.flush(30) == 0


def test_live_replay_and_a_takeover_after_a_crash_publish_the_event_time_states(
    settings: Settings,
    names: TopicNames,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envelopes = arrival(seed=11)
    expected = expected_states(envelopes)
    # Windows reaching back past the campaign: the reset case's open, 40 days later, ends them.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(LONG_WINDOWS)
    settings = dataclasses.replace(settings, policy_file=policy_file)
    monkeypatch.setenv("MAILSTREAM_POLICY_FILE", str(policy_file))
    assert expected["soft@example.com"]["status"] == "ACTIVE"
    assert expected["cause@example.com"]["suppression_reason"] == "HARD_BOUNCE"
    # The reset happened in event-time order: the open scores first_open alone, the click's
    # points gone; in arrival order the click (older than the open) would not reset anything.
    weights = default_policy().score
    assert expected[RESET]["score"] == weights.first_open
    assert expected[RESET]["clicks"] == 1 and expected[RESET]["opens"] == 1
    assert in_arrival_order(envelopes, RESET).score == weights.first_open + weights.click
    windows = expected_windows(envelopes, load_policy(policy_file))
    assert sum(window["counts"]["delivered"] for window in windows.values()) > 500
    with running_worker(settings, tmp_path / "live.log"):
        send_envelopes(settings, envelopes)
        wait_for_states(settings, names, expected)
        wait_for_windows(settings, windows)
        assert main(["suppress", "remove", LIFTED, "--actor", "tester"]) == 0
        live, live_suppressions = published(settings, names)
    assert live[LIFTED]["status"] == "ACTIVE"
    assert {key: value for key, value in live.items() if key != LIFTED} == {
        key: value for key, value in expected.items() if key != LIFTED
    }

    replay(capsys, tmp_path)
    assert published(settings, names) == (live, live_suppressions)

    other = dataclasses.replace(
        settings, topic_prefix=f"{settings.topic_prefix}b.", app_id=f"{settings.app_id}-b"
    )
    create_topics(other, topic_specs(other, PROVIDERS))
    copy_commands(settings, other)
    half = len(envelopes) // 2
    send_envelopes(other, envelopes[:half])
    with running_worker(other, tmp_path / "crashed.log") as crashed:
        wait_for_first_commit(other, 60)
        send_envelopes(other, envelopes[half:])  # a backlog the worker has not read yet
        behind = uncommitted(other)
        assert behind, "the worker had committed all its sources before it was killed"
        kill(crashed)
        print(f"killed with (committed, end) behind: {behind}")
    with running_worker(other, tmp_path / "takeover.log"):
        wait_for_states(other, TopicNames(other.topic_prefix), live)
        assert published(other, TopicNames(other.topic_prefix)) == (live, live_suppressions)
        wait_for_windows(other, windows)  # no event lost or counted twice across the crash


def expected_windows(
    envelopes: list[dict[str, Any]], policy: Policy
) -> dict[bytes, dict[str, Any]]:
    """The deliverability windows of `envelopes` computed in-process by the worker's own
    processors, on one partition, in arrival order: what any partitioning and interleaving
    must publish."""
    settings = Settings(partitions=1)
    names = TopicNames()
    built = build_processors(settings, policy)
    windows = DeliverabilityWindows(
        names, policy.deliverability, codec_for("deliverability"), ALERT, codec_for("dead_letter")
    )
    messages: dict[bytes, dict[str, Any]] = {}
    recipients: dict[bytes, dict[str, Any]] = {}
    buckets: dict[bytes, dict[str, Any]] = {}
    offset = 0
    received_at = int(time.time() * 1000)  # as the live run's records are stamped: now
    for number, envelope in enumerate(envelopes):
        raw = raw_record(names, envelope)
        source = SourceRecord(raw.topic, 0, number, received_at, raw.key, raw.value)
        for output in built.normalizer.process(source, messages):
            if output.topic == names.events:
                event = SourceRecord(names.events, 0, offset, T0, output.key, output.value)
                built.keeper.process(event, recipients)
                offset += 1
    for number, output in enumerate(built.keeper.take_bucket_snapshots()):
        windows.process(
            SourceRecord(output.topic, 0, number, T0, output.key, output.value), buckets
        )
    return {
        output.key: codec_for("deliverability").decode(output.value or b"")
        for output in windows.publishable()
    }


def wait_for_windows(settings: Settings, expected: dict[bytes, dict[str, Any]]) -> None:
    topic = TopicNames(settings.topic_prefix).deliverability
    decode = codec_for("deliverability").decode

    def published(records: list[Any]) -> dict[bytes, dict[str, Any]]:
        latest = latest_by_key(records)
        return {key: decode(value) for key, value in latest.items() if value is not None}

    read_until(settings, topic, lambda records: published(records) == expected, timeout=120)


def in_arrival_order(envelopes: list[dict[str, Any]], recipient: str) -> RecipientState:
    """The rules applied to `recipient`'s events in the order they were sent (what the state
    would be without event time); the events must name their recipient."""
    state = None
    for envelope in envelopes:
        for event in parse_envelope(envelope):
            if event.get("recipient") == recipient:
                state = apply(state, event, default_policy())
    assert state is not None
    return state


def wait_for_first_commit(settings: Settings, timeout: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.librdkafka_config())
    deadline = time.monotonic() + timeout
    while not committed_offsets(admin, settings.app_id):
        assert time.monotonic() < deadline, "the worker committed nothing"
        time.sleep(0.05)


def uncommitted(settings: Settings) -> dict[Partition, tuple[int, int]]:
    """The source partitions (the raw topics, and email.events, which the worker writes and
    its state agent reads) not committed to their end now: partition -> (committed, end). A
    non-empty answer means the worker is in the middle of a backlog."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.librdkafka_config())
    names = TopicNames(settings.topic_prefix)
    sources = partitions_of(admin, [*(names.raw(provider) for provider in PROVIDERS), names.events])
    committed = committed_offsets(admin, settings.app_id)
    return {
        partition: (committed.get(partition, 0), end)
        for partition, end in list_offsets(admin, sources).items()
        if committed.get(partition, 0) < end
    }
