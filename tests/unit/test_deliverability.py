"""Deliverability figures: the state step's counting into event-time buckets (once per event,
whatever the order, the repeats or a crash between the bucket and the recipient's entry), the
rates and their judgement, and the windows summed over partitions with their alerts."""

from __future__ import annotations

import random
import zlib
from dataclasses import replace
from typing import Any

import orjson
import pytest

from mailstream.codec import codec_for
from mailstream.deliverability import (
    Status,
    is_bucket_key,
    judge,
    mask_addresses,
    rates_of,
    sending_domain,
)
from mailstream.events import BounceClass, EventType, new_event
from mailstream.policy import Policy, default_policy
from mailstream.streams.deliverability import DeliverabilityWindows
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.recipients import StateKeeper
from mailstream.streams.records import SourceRecord
from mailstream.topics import TopicNames

NAMES = TopicNames("t.")
T0 = 1_700_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
DEFAULTS = default_policy()
POLICY = replace(DEFAULTS, deliverability=replace(DEFAULTS.deliverability, minimum_volume=100))
RECORD = codec_for("deliverability")
ALERT = codec_for("deliverability_alert")
DEAD_LETTER = codec_for("dead_letter")
Table = dict[bytes, dict[str, Any]]


def keeper(policy: Policy = POLICY) -> StateKeeper:
    return StateKeeper(
        NAMES,
        policy,
        codec_for("email_event"),
        codec_for("recipient_state"),
        codec_for("suppression"),
        codec_for("operator_command"),
        codec_for("dead_letter"),
        codec_for("erasure"),
        ErasedAddresses(None),
        4,
    )


def event(
    event_type: EventType,
    event_id: str,
    at: int = T0,
    recipient: str = "ann@example.com",
    sender: str = "news@shop.example",
    **fields: Any,
) -> dict[str, Any]:
    return new_event(
        event_id=event_id,
        provider="inboxroad",
        event_type=event_type,
        recipient=recipient,
        sender=sender,
        message_id=f"m-{event_id}",
        occurred_at=at,
        **fields,
    )


def on_events(value: dict[str, Any], offset: int, partition: int = 0) -> SourceRecord:
    key = value["recipient"].encode()
    return SourceRecord(
        NAMES.events, partition, offset, T0, key, codec_for("email_event").encode(value)
    )


def snapshots(processor: StateKeeper) -> list[dict[str, Any]]:
    """The buckets waiting to be published, taken (as the worker does before a commit)."""
    taken = processor.take_bucket_snapshots()
    assert all(output.topic == NAMES.deliverability_buckets for output in taken)
    return [orjson.loads(output.value or b"") for output in taken]


def counts(table: Table) -> dict[int, dict[str, int]]:
    """Bucket start -> counts, over every bucket in the table."""
    totals: dict[int, dict[str, int]] = {}
    for key, bucket in table.items():
        if is_bucket_key(key):
            into = totals.setdefault(bucket["start"], {})
            for name, value in bucket["counts"].items():
                into[name] = into.get(name, 0) + value
    return totals


# --- Counting in the state step -------------------------------------------------------------


def test_each_new_event_is_counted_once_and_every_repeat_republishes_its_bucket() -> None:
    table: Table = {}
    processor = keeper()
    for offset in range(3):
        outputs = processor.process(
            on_events(event(EventType.DELIVERED, f"d{offset}"), offset), table
        )
        assert all(output.topic != NAMES.deliverability_buckets for output in outputs)
    (between_commits,) = snapshots(processor)  # one per bucket, not one per event
    assert between_commits["counts"] == {"delivered": 3}
    assert snapshots(processor) == []

    processor.process(on_events(event(EventType.DELIVERED, "d2"), 2), table)  # redelivered
    assert snapshots(processor) == [between_commits]
    processor.process(on_events(event(EventType.DELIVERED, "d1"), 3), table)  # a repeat
    assert snapshots(processor) == [between_commits]
    assert counts(table) == {T0 - T0 % (5 * MINUTE): {"delivered": 3}}


def test_a_crash_between_the_bucket_and_the_recipients_entry_does_not_count_twice() -> None:
    """The bucket is written first; if the entry's write was lost, the redelivered event is
    new to the timeline, and the bucket's offset says it was counted."""
    table: Table = {}
    processor = keeper()
    processor.process(on_events(event(EventType.COMPLAINED, "c1"), 7), table)
    del table[b"ann@example.com"]  # the entry's changelog record never reached the broker

    processor.process(on_events(event(EventType.COMPLAINED, "c1"), 7), table)

    assert counts(table) == {T0 - T0 % (5 * MINUTE): {"complaints": 1}}
    assert b"ann@example.com" in table


def test_the_buckets_do_not_depend_on_arrival_order() -> None:
    """Events of several recipients over nine days (older than the longest window: a slot
    keeps the newer bucket), duplicates among them, in many orders."""
    kinds = [
        (EventType.DELIVERED, {}),
        (EventType.BOUNCED, {"bounce_class": BounceClass.HARD, "bounce_reason": "userunknown"}),
        (EventType.BOUNCED, {"bounce_class": BounceClass.BLOCK, "diagnostic": "550 spam"}),
        (EventType.COMPLAINED, {}),
        (EventType.OPENED, {"user_agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"}),
    ]
    rng = random.Random(5)
    events = []
    for n in range(60):
        event_type, fields = kinds[n % len(kinds)]
        at = T0 + rng.randrange(9 * DAY)
        events.append(event(event_type, f"e{n}", at, f"r{n % 7}@example.com", **fields))
    events += events[:10]  # repeats of some events

    results = []
    for _ in range(6):
        rng.shuffle(events)
        table: Table = {}
        processor = keeper()
        for offset, each in enumerate(events):
            processor.process(on_events(each, offset), table)
        results.append(
            {
                key: {k: v for k, v in bucket.items() if k != "offset"}
                for key, bucket in table.items()
                if is_bucket_key(key)
            }
        )
    assert all(result == results[0] for result in results[1:])


def test_machine_opens_and_events_that_count_for_nothing_have_no_bucket() -> None:
    table: Table = {}
    processor = keeper()
    bot = event(EventType.OPENED, "o1", user_agent="Mozilla/5.0 (compatible; bingbot/2.0)")
    processor.process(on_events(bot, 0), table)
    processor.process(on_events(event(EventType.SENT, "s1"), 1), table)
    assert snapshots(processor) == []
    assert counts(table) == {}


def test_a_bounce_keeps_its_reason_and_its_diagnostic_without_the_address() -> None:
    table: Table = {}
    bounce = event(
        EventType.BOUNCED,
        "b1",
        bounce_class=BounceClass.HARD,
        bounce_reason="userunknown",
        diagnostic="550 5.1.1 <ann@example.com>: Recipient address rejected",
    )
    processor = keeper()
    processor.process(on_events(bounce, 0), table)
    (bucket,) = snapshots(processor)
    assert bucket["reasons"] == {"userunknown": 1}
    assert [text for _, text in bucket["diagnostics"]] == [
        "550 5.1.1 <<address>>: Recipient address rejected"
    ]
    assert "ann@" not in mask_addresses("mail for ann@example.com bounced" * 50)
    assert 190 < len(mask_addresses("word " * 1000)) <= 200
    assert mask_addresses("x" * 10_000) == ""  # a cut word could be the start of an address
    cut_inside = ("a" * 120 + "@b.c ") * 3 + "z" * 20 + " jane.doe@example.com"
    assert "jane" not in mask_addresses(cut_inside * 20)


def test_the_sending_domain_is_the_senders_lower_cased() -> None:
    assert sending_domain("News@Shop.Example") == "shop.example"
    assert sending_domain(None) == sending_domain("no-at-sign") == "unknown"


# --- Rates and judgement ---------------------------------------------------------------------


def test_rates_use_the_documented_denominators() -> None:
    rates = rates_of({"delivered": 900, "hard_bounces": 50, "soft_bounces": 30, "blocks": 20})
    assert rates == {"complaint_rate": 0.0, "hard_bounce_rate": 0.05, "block_rate": 0.02}
    assert rates_of({}) == {"complaint_rate": None, "hard_bounce_rate": None, "block_rate": None}


@pytest.mark.parametrize(
    ("complaints", "previous", "expected"),
    [
        (0, Status.OK, Status.OK),
        (10, Status.OK, Status.WARN),  # 0.10% of 10,000 delivered
        (30, Status.OK, Status.CRITICAL),  # 0.30%
        (25, Status.CRITICAL, Status.CRITICAL),  # 0.25%: not below 80% of 0.30%
        (25, Status.OK, Status.WARN),
        (23, Status.CRITICAL, Status.WARN),  # below 0.24%, still at warn
        (9, Status.WARN, Status.WARN),  # 0.09%: not below 0.08%
        (7, Status.WARN, Status.OK),
    ],
)
def test_a_status_rises_at_its_level_and_falls_only_below_the_recovery_ratio(
    complaints: int, previous: Status, expected: Status
) -> None:
    status, findings = judge(
        {"delivered": 10_000, "complaints": complaints}, previous, DEFAULTS.deliverability
    )
    assert status is expected
    assert bool(findings) == (expected is not Status.OK)


def test_a_rate_below_the_minimum_volume_is_not_judged() -> None:
    status, findings = judge(
        {"delivered": 999, "complaints": 500}, Status.OK, DEFAULTS.deliverability
    )
    assert status is Status.OK
    assert findings == ["complaint_rate not judged: volume 999 < 1000"] + [
        f"{rate} not judged: volume 999 < 1000" for rate in ("hard_bounce_rate", "block_rate")
    ]


# --- Windows over every partition ------------------------------------------------------------


class Pipeline:
    """The state step over two partitions and the windows agent, records handed over as the
    topics would (the bucket snapshots, in order, on one partition)."""

    def __init__(self) -> None:
        self.keeper = keeper()
        self.recipients: Table = {}
        self.windows = DeliverabilityWindows(
            NAMES, POLICY.deliverability, RECORD, ALERT, DEAD_LETTER
        )
        self.table: Table = {}
        self.offsets = [0, 0]
        self.snapshots: list[SourceRecord] = []
        self.alerts: list[dict[str, Any]] = []

    def send(self, *events: dict[str, Any]) -> None:
        for each in events:
            partition = zlib.crc32(each["recipient"].encode()) % 2
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            self.keeper.process(on_events(each, offset, partition), self.recipients)
            if offset % 25 == 0:
                self.commit()
        self.commit()

    def commit(self) -> None:
        """The buckets published before a commit, each a record of the buckets topic."""
        for output in self.keeper.take_bucket_snapshots():
            record = SourceRecord(
                output.topic, 0, len(self.snapshots), T0, output.key, output.value
            )
            self.snapshots.append(record)
            self.deliver(record)

    def deliver(self, record: SourceRecord) -> None:
        for output in self.windows.process(record, self.table):
            assert output.topic == NAMES.alerts
            self.alerts.append(ALERT.decode(output.value or b""))

    def published(self) -> dict[tuple[str, str], dict[str, Any]]:
        records = {}
        for output in self.windows.publishable():
            record = RECORD.decode(output.value or b"")
            records[(record["domain"], record["window"])] = record
        return records


def campaign(domain: str, start: int, delivered: int, complaints: int, tag: str) -> list[Any]:
    sender = f"news@{domain}"
    events = [
        event(EventType.DELIVERED, f"{tag}d{n}", start + n * 1000, f"{tag}{n}@x.example", sender)
        for n in range(delivered)
    ]
    events += [
        event(
            EventType.COMPLAINED,
            f"{tag}c{n}",
            start + delivered * 1000 + n,
            f"{tag}{n}@x.example",
            sender,
        )
        for n in range(complaints)
    ]
    return events


def test_a_complaint_spike_raises_one_critical_alert_and_recovers_when_it_leaves_the_window() -> (
    None
):
    pipeline = Pipeline()
    pipeline.send(*campaign("spiky.example", T0, 400, 0, "a"))
    pipeline.send(*campaign("calm.example", T0, 400, 0, "b"))
    pipeline.send(*campaign("spiky.example", T0 + 10 * MINUTE, 100, 5, "c"))  # 1% of 500

    critical = [a for a in pipeline.alerts if a["status"] == "CRITICAL"]
    assert [(a["domain"], a["window"]) for a in critical] == [
        ("spiky.example", "1h"),
        ("spiky.example", "1d"),
        ("spiky.example", "7d"),
    ]
    records = pipeline.published()
    assert records[("spiky.example", "1h")]["status"] == "CRITICAL"
    assert records[("spiky.example", "1h")]["counts"]["complaints"] == 5
    assert records[("spiky.example", "1h")]["complaint_rate"] == pytest.approx(5 / 500)
    assert records[("calm.example", "1h")]["status"] == "OK"
    assert (
        sum(point["counts"]["delivered"] for point in records[("spiky.example", "1d")]["series"])
        == 500
    )

    pipeline.alerts.clear()
    pipeline.send(*campaign("calm.example", T0 + 2 * HOUR, 200, 0, "d"))  # time moves on
    assert [(a["domain"], a["window"], a["status"]) for a in pipeline.alerts] == [
        ("spiky.example", "1h", "OK")
    ]
    assert pipeline.published()[("spiky.example", "1h")]["counts"]["complaints"] == 0


def test_redelivered_snapshots_and_a_restart_change_nothing_and_alert_no_new_change() -> None:
    """A restart repeats each window's latest alert (same id), and nothing else."""
    pipeline = Pipeline()
    pipeline.send(*campaign("spiky.example", T0, 200, 3, "a"))
    before = pipeline.published()
    alerts = list(pipeline.alerts)

    for record in pipeline.snapshots[-50:]:
        pipeline.deliver(record)  # redelivered after a crash, before the commit
    restarted = DeliverabilityWindows(NAMES, POLICY.deliverability, RECORD, ALERT, DEAD_LETTER)
    pipeline.windows = restarted  # a new worker, its table recovered from the changelog
    for record in pipeline.snapshots[-50:]:
        pipeline.deliver(record)

    assert pipeline.alerts[: len(alerts)] == alerts
    repeated = pipeline.alerts[len(alerts) :]
    assert repeated and {a["alert_id"] for a in repeated} <= {a["alert_id"] for a in alerts}
    assert pipeline.published() == before


def test_an_event_dated_far_after_its_receipt_is_not_counted() -> None:
    """One wrong clock would move every window's end into the future and empty them all."""
    table: Table = {}
    processor = keeper()
    future = event(EventType.DELIVERED, "f1", at=T0 + DAY, received_at=T0)
    skewed = event(EventType.DELIVERED, "f2", at=T0 + 10 * MINUTE, received_at=T0)
    processor.process(on_events(future, 0), table)
    processor.process(on_events(skewed, 1), table)
    assert list(counts(table).values()) == [{"delivered": 1}]
    assert processor.uncounted == {"future": 1}


def test_too_little_volume_holds_a_status_and_an_empty_window_is_ok() -> None:
    policy = DEFAULTS.deliverability
    held, findings = judge({"delivered": 99, "complaints": 5}, Status.CRITICAL, policy)
    assert held is Status.CRITICAL
    assert "CRITICAL held: too little volume to judge a recovery" in findings
    assert judge({}, Status.CRITICAL, policy)[0] is Status.OK


def test_a_snapshot_that_is_not_one_is_a_dead_letter_and_the_windows_go_on() -> None:
    pipeline = Pipeline()
    poison = SourceRecord(NAMES.deliverability_buckets, 0, 0, T0, b"\x00deliverability[]", b"{}")
    (letter,) = pipeline.windows.process(poison, pipeline.table)
    assert letter.topic == NAMES.dead_letters
    pipeline.send(*campaign("shop.example", T0, 10, 0, "a"))
    assert pipeline.published()[("shop.example", "1h")]["counts"]["delivered"] == 10


def test_a_dimension_with_nothing_left_in_any_window_is_tombstoned_and_forgotten() -> None:
    pipeline = Pipeline()
    pipeline.send(*campaign("old.example", T0, 10, 0, "a"))
    pipeline.published()
    pipeline.send(*campaign("new.example", T0 + 8 * DAY, 10, 0, "b"))
    outputs = pipeline.windows.publishable()
    gone = [output for output in outputs if b"old.example" in (output.key or b"")]
    assert [output.value for output in gone] == [None, None, None]
    assert not any(b"old.example" in key for key in pipeline.table)
    assert pipeline.windows.publishable() == []


def test_a_restart_sends_each_windows_latest_alert_again_with_its_id() -> None:
    """A crash can store a status and lose its alert: the restart writes it again."""
    pipeline = Pipeline()
    pipeline.send(*campaign("spiky.example", T0, 200, 3, "a"))
    sent = {alert["window"]: alert for alert in pipeline.alerts}  # the latest per window
    restarted = DeliverabilityWindows(NAMES, POLICY.deliverability, RECORD, ALERT, DEAD_LETTER)
    again = [ALERT.decode(output.value or b"") for output in restarted.load(pipeline.table)]
    assert sorted(again, key=lambda alert: alert["window"]) == sorted(
        sent.values(), key=lambda alert: alert["window"]
    )
