"""The two stream processors without a broker: `Normalizer` (raw webhooks to canonical events)
and `StateKeeper` (canonical events and operator commands to recipient state and
suppressions), each driven over plain dict tables, plus the inactivity sweep's choice of
recipients. Every output is decoded with the codecs the worker uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import mailstream.streams.normalize as normalize_module
from mailstream.codec import SINGLE_OBJECT_MARKER, codec_for
from mailstream.commands import CommandAction, OperatorCommand
from mailstream.connectors import inboxroad, mailbot, maileroo
from mailstream.connectors.base import HUMAN_AGENT, MAX_BODY_BYTES
from mailstream.connectors.registry import PROVIDERS
from mailstream.events import BounceClass, EventType, new_event
from mailstream.policy import Policy, default_policy, load_policy
from mailstream.recipient import SuppressionReason
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.metrics import WorkerMetrics
from mailstream.streams.normalize import RECEIVED_AT_HEADER, Normalizer
from mailstream.streams.recipients import StateKeeper, recipient_records
from mailstream.streams.records import (
    MAX_DEAD_LETTER_PAYLOAD,
    Output,
    SourceRecord,
    partition_of,
    payload_was_cut,
)
from mailstream.streams.sweep import SWEEP_ACTOR, due_resets
from mailstream.topics import TopicNames

Event = dict[str, Any]
Table = dict[bytes, dict[str, Any]]

NAMES = TopicNames("t.")
PARTITIONS = 4
POLICY = default_policy()
T0 = 1_700_000_000_000
DAY = 86_400_000
PAYLOADS = Path(__file__).parent.parent / "payloads"
GOLDEN_CASES = sorted(
    path for path in PAYLOADS.glob("*/*.json") if not path.name.endswith(".expected.json")
)

EVENT = codec_for("email_event")
DEAD_LETTER = codec_for("dead_letter")
STATE = codec_for("recipient_state")
SUPPRESSION = codec_for("suppression")
COMMAND = codec_for("operator_command")
ERASURE = codec_for("erasure")


# --- Helpers --------------------------------------------------------------------------------


def normalizer(policy: Policy = POLICY, erased: ErasedAddresses | None = None) -> Normalizer:
    """As streams/app.py builds it: every provider reads its own raw topic."""
    providers = {NAMES.raw(provider): provider for provider in PROVIDERS}
    return Normalizer(
        NAMES,
        providers,
        policy,
        EVENT,
        DEAD_LETTER,
        erased if erased is not None else ErasedAddresses(None),
    )


def keeper(erased: ErasedAddresses | None = None) -> StateKeeper:
    return StateKeeper(
        NAMES,
        POLICY,
        EVENT,
        STATE,
        SUPPRESSION,
        COMMAND,
        DEAD_LETTER,
        ERASURE,
        erased if erased is not None else ErasedAddresses(None),
        PARTITIONS,
    )


def raw(
    provider: str,
    payload: dict[str, Any] | bytes,
    offset: int = 0,
    timestamp: int | None = None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> SourceRecord:
    """A webhook body on its provider's raw topic, as the ingest lands it."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return SourceRecord(NAMES.raw(provider), 1, offset, timestamp, b"m1", body, headers)


def published_events(outputs: list[Output]) -> list[Event]:
    """The canonical events of `outputs`, checking each is on email.events keyed by recipient."""
    events = []
    for output in outputs:
        assert output.topic == NAMES.events
        assert output.value is not None
        event = EVENT.decode(output.value)
        assert output.key == event["recipient"].encode()
        events.append(event)
    return events


def only_dead_letter(outputs: list[Output]) -> dict[str, Any]:
    assert len(outputs) == 1, outputs
    (output,) = outputs
    assert output.topic == NAMES.dead_letters
    return DEAD_LETTER.decode(output.value or b"")


def canonical(
    event_type: EventType,
    recipient: str | None = "ann@example.com",
    event_id: str = "e1",
    at: int = T0,
    **fields: Any,
) -> Event:
    return new_event(
        event_id=event_id,
        provider="inboxroad",
        event_type=event_type,
        recipient=recipient,
        message_id=f"msg-{event_id}",
        occurred_at=at,
        **fields,
    )


def on_events_topic(event: Event | bytes, offset: int = 0) -> SourceRecord:
    value = event if isinstance(event, bytes) else EVENT.encode(event)
    recipient = "ann@example.com" if isinstance(event, bytes) else event["recipient"]
    key = (recipient or "").encode() or None
    return SourceRecord(NAMES.events, 0, offset, T0, key, value)


def command(action: CommandAction, command_id: str = "c1", **fields: Any) -> OperatorCommand:
    values: dict[str, Any] = {
        "recipient": "ann@example.com",
        "actor": "ops@host",
        "requested_at": T0 + DAY,
    }
    return OperatorCommand(action=action, command_id=command_id, **(values | fields))


def on_commands_topic(value: OperatorCommand | bytes, offset: int = 0) -> SourceRecord:
    """The record as `mailstream suppress` writes it: keyed by the recipient, on its
    partition, stamped when it was requested."""
    body = value if isinstance(value, bytes) else COMMAND.encode(value.to_record())
    written_at = value.requested_at if isinstance(value, OperatorCommand) else T0
    key = b"ann@example.com"
    return SourceRecord(
        NAMES.commands, partition_of(key, PARTITIONS), offset, written_at, key, body
    )


def feed(processor: StateKeeper, recipients: Table, *events: Event) -> list[Output]:
    """Every event through the keeper in order; the outputs of the last one."""
    outputs: list[Output] = []
    for offset, event in enumerate(events):
        outputs = processor.process(on_events_topic(event, offset), recipients)
    return outputs


def state_of(output: Output) -> dict[str, Any]:
    assert (output.topic, output.key) == (NAMES.recipient_state, b"ann@example.com")
    return STATE.decode(output.value or b"")


def suppression_of(output: Output) -> dict[str, Any]:
    assert (output.topic, output.key) == (NAMES.suppressions, b"ann@example.com")
    assert output.value is not None, "a tombstone, not a suppression"
    return SUPPRESSION.decode(output.value)


GLOBAL_KEY = b'["ann@example.com",null]'


def scoped_of(output: Output, key: bytes = GLOBAL_KEY) -> dict[str, Any]:
    """The record of `email.suppressions.scoped` for one scope (default: the global one)."""
    assert (output.topic, output.key) == (NAMES.scoped_suppressions, key)
    assert output.value is not None, "a tombstone, not a suppression"
    return SUPPRESSION.decode(output.value)


def audit_headers(actor: str = "ops@host", command_id: str = "c1") -> dict[str, bytes]:
    return {"mailstream.command_id": command_id.encode(), "mailstream.actor": actor.encode()}


def as_published(expected: list[Event]) -> list[Event]:
    """Golden events as the normalizer publishes them: an event without recipient takes its
    message's from an earlier event of the same payload, else it is parked or, without a
    message id either, dead-lettered (left out)."""
    known: dict[str | None, str] = {}
    published = []
    for event in expected:
        recipient = event["recipient"] or known.get(event["message_id"])
        if recipient is None:
            continue
        known.setdefault(event["message_id"], recipient)
        published.append(event | {"recipient": recipient})
    return published


# --- Normalizer: events ---------------------------------------------------------------------


def test_a_delivered_webhook_becomes_one_event_keyed_by_its_recipient() -> None:
    messages: Table = {}
    payload = inboxroad.sample_payload("d", "Ann@Example.com", "ir1@x", T0)
    outputs = normalizer().process(raw("inboxroad", payload, timestamp=T0 + 5), messages)
    (event,) = published_events(outputs)
    assert event["recipient"] == "ann@example.com"
    assert (event["provider"], event["event_type"]) == ("inboxroad", "DELIVERED")
    assert (event["message_id"], event["occurred_at"]) == ("ir1@x", T0)
    assert event["received_at"] == T0 + 5, "received_at defaults to the record's timestamp"
    assert event["delivered_at"] == T0
    assert messages[b"inboxroad:ir1@x"]["recipient"] == "ann@example.com"
    assert messages[b"inboxroad:ir1@x"]["delivered_at"] == T0


@pytest.mark.parametrize(
    "case", GOLDEN_CASES, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDEN_CASES]
)
def test_a_golden_payload_publishes_its_expected_events_in_order(case: Path) -> None:
    expected = orjson.loads(case.with_name(case.stem + ".expected.json").read_bytes())
    outputs = normalizer().process(raw(case.parent.name, case.read_bytes()), {})
    letters = [output for output in outputs if output.topic == NAMES.dead_letters]
    unresolvable = [e for e in expected if not e["recipient"] and not e["message_id"]]
    assert len(letters) == (1 if unresolvable else 0)  # one for all of them
    published = published_events([output for output in outputs if output not in letters])
    # The pipeline fills in what the message table knows: the delivery, and the sender of an
    # event that names none (the batch's click and unsubscribe take the delivery's).
    senders = {e["message_id"]: e["sender"] for e in expected if e["sender"]}
    filled_in = [
        {**e, "sender": e["sender"] or senders.get(e["message_id"])} for e in as_published(expected)
    ]
    without_delivery = [{k: v for k, v in e.items() if k != "delivered_at"} for e in published]
    assert without_delivery == [
        {k: v for k, v in e.items() if k != "delivered_at"} for e in filled_in
    ]


def test_the_received_at_header_wins_over_the_record_timestamp_unless_unreadable() -> None:
    payload = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
    stamped = raw("maileroo", payload, timestamp=T0 + 9, headers=((RECEIVED_AT_HEADER, b"123"),))
    garbled = raw("maileroo", payload, timestamp=T0 + 9, headers=((RECEIVED_AT_HEADER, b"x"),))
    assert published_events(normalizer().process(stamped, {}))[0]["received_at"] == 123
    assert published_events(normalizer().process(garbled, {}))[0]["received_at"] == T0 + 9


def test_an_event_of_a_known_message_gets_its_recipient_and_delivery_time() -> None:
    messages: Table = {}
    processor = normalizer()
    delivered = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
    click = maileroo.sample_payload(
        "clicked", None, "mr1@x", T0 + 60_000, "mr-e2", original_url="https://example.com/a"
    )
    processor.process(raw("maileroo", delivered, 0), messages)
    (event,) = published_events(processor.process(raw("maileroo", click, 1), messages))
    assert (event["event_id"], event["event_type"]) == ("mr-e2", "CLICKED")
    assert event["recipient"] == "cy@example.com"
    assert event["delivered_at"] == T0


def test_an_open_before_its_delivery_is_parked_then_released_ahead_of_the_delivery() -> None:
    messages: Table = {}
    processor = normalizer()
    opened = mailbot.sample_payload(
        "message.opened", None, "mb1@x", T0 + 90_000, "mb-e2", user_agent=HUMAN_AGENT
    )
    delivered = mailbot.sample_payload("message.delivered", "dee@example.com", "mb1@x", T0, "mb-e1")

    assert processor.process(raw("mailbot", opened, 0), messages) == []
    parked = messages[b"mailbot:mb1@x"]
    assert parked["recipient"] is None
    assert [e["event_id"] for e in parked["pending"]] == ["mb-e2"]

    released = published_events(processor.process(raw("mailbot", delivered, 1), messages))
    assert [(e["event_id"], e["event_type"]) for e in released] == [
        ("mb-e2", "OPENED"),
        ("mb-e1", "DELIVERED"),
    ]
    assert {e["recipient"] for e in released} == {"dee@example.com"}
    assert released[0]["delivered_at"] == T0, "the released open learns the delivery time"
    assert messages[b"mailbot:mb1@x"]["pending"] == []


def test_a_redelivered_releasing_event_releases_the_parked_events_again() -> None:
    messages: Table = {}
    processor = normalizer()
    opened = maileroo.sample_payload("opened", None, "mr1@x", T0 + 60_000, "mr-e2")
    delivered = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
    processor.process(raw("maileroo", opened, 0), messages)
    first = published_events(processor.process(raw("maileroo", delivered, 1), messages))
    again = published_events(processor.process(raw("maileroo", delivered, 1), messages))
    assert [e["event_id"] for e in first] == ["mr-e2", "mr-e1"]
    assert again == first


def test_an_event_beyond_max_pending_per_message_is_dead_lettered_as_unresolved(
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("max_pending_per_message: 1\n", encoding="utf-8")
    processor = normalizer(load_policy(policy_file))
    messages: Table = {}
    first = maileroo.sample_payload("opened", None, "mr1@x", T0, "mr-e1")
    second = maileroo.sample_payload("opened", None, "mr1@x", T0 + 1, "mr-e2")
    assert processor.process(raw("maileroo", first, 0), messages) == []
    record = only_dead_letter(processor.process(raw("maileroo", second, 7), messages))
    assert (record["error_kind"], record["provider"]) == ("unresolved", "maileroo")
    assert "max_pending_per_message" in record["error_message"]
    assert (record["source_topic"], record["source_offset"]) == (NAMES.raw("maileroo"), 7)
    assert [e["event_id"] for e in messages[b"maileroo:mr1@x"]["pending"]] == ["mr-e1"]


def test_an_event_without_recipient_or_message_id_is_dead_lettered_as_unresolved() -> None:
    messages: Table = {}
    payload = maileroo.sample_payload("opened", None, "", T0, "mr-e9")
    record = only_dead_letter(normalizer().process(raw("maileroo", payload, 4), messages))
    assert (record["error_kind"], record["provider"]) == ("unresolved", "maileroo")
    assert "cannot be resolved" in record["error_message"]
    assert record["payload"] == orjson.dumps(payload)
    assert messages == {}


# --- Normalizer: dead letters ---------------------------------------------------------------


def _without_times(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("event_time", "inserted_at")}


_DELIVERED = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
UNPARSABLE_BODIES = {
    "not_utf8": b'{"event_type": "\xff\xfe"}',
    "invalid_json": b"{not json",
    "wrong_type": b'"a string"',
    "missing_field": orjson.dumps(_without_times(_DELIVERED)),
    "invalid_value": orjson.dumps(_DELIVERED | {"event_time": "yesterday"}),
    "too_large": b" " * (MAX_BODY_BYTES + 1),
}


@pytest.mark.parametrize(("kind", "body"), UNPARSABLE_BODIES.items(), ids=UNPARSABLE_BODIES)
def test_an_unparsable_webhook_is_dead_lettered_with_its_parse_error_kind_and_coordinates(
    kind: str, body: bytes
) -> None:
    messages: Table = {}
    source = raw("maileroo", body, offset=41, timestamp=T0)
    outputs = normalizer().process(source, messages)
    record = only_dead_letter(outputs)
    assert record["error_kind"] == kind
    assert record["provider"] == "maileroo"
    assert (record["source_topic"], record["source_partition"]) == (NAMES.raw("maileroo"), 1)
    assert (record["source_offset"], record["source_timestamp"]) == (41, T0)
    assert (outputs[0].key, record["key"]) == (b"m1", b"m1")
    assert record["payload"] == body[:MAX_DEAD_LETTER_PAYLOAD]
    assert payload_was_cut(record) == (kind == "too_large")
    assert messages == {}


def test_a_bad_item_in_a_batch_dead_letters_the_whole_webhook() -> None:
    good = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
    body = orjson.dumps([good, good | {"event_time": "yesterday"}])
    messages: Table = {}
    record = only_dead_letter(normalizer().process(raw("maileroo", body), messages))
    assert record["error_kind"] == "invalid_value"
    assert "batch item 1" in record["error_message"]
    assert messages == {}, "the good item must not be half-applied"


def test_a_parser_bug_is_dead_lettered_as_internal_error_and_the_stream_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_parse(*args: object, **kwargs: object) -> list[Event]:
        raise KeyError("event_data")

    payload = maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1")
    monkeypatch.setattr(normalize_module, "parse", broken_parse)
    record = only_dead_letter(normalizer().process(raw("maileroo", payload, 3), {}))
    assert (record["error_kind"], record["provider"]) == ("internal_error", "maileroo")
    assert "KeyError" in record["error_message"]
    assert record["source_offset"] == 3
    monkeypatch.undo()
    assert len(published_events(normalizer().process(raw("maileroo", payload, 4), {}))) == 1


def test_a_record_on_a_topic_no_provider_reads_is_dead_lettered_without_provider() -> None:
    payload = orjson.dumps(inboxroad.sample_payload("d", "ann@example.com", "ir1@x", T0))
    source = SourceRecord("t.email.raw.nobody", 0, 5, T0, None, payload)
    record = only_dead_letter(normalizer().process(source, {}))
    assert record["error_kind"] == "unknown_provider"
    assert record["provider"] is None
    assert "t.email.raw.nobody" in record["error_message"]
    assert (record["source_topic"], record["source_offset"]) == ("t.email.raw.nobody", 5)
    assert record["payload"] == payload


# --- StateKeeper: events --------------------------------------------------------------------


def test_a_delivered_event_publishes_the_recipient_state_and_no_suppression() -> None:
    recipients: Table = {}
    outputs = feed(keeper(), recipients, canonical(EventType.DELIVERED))
    (output,) = outputs
    state = state_of(output)
    assert (state["recipient"], state["status"], state["delivered"]) == (
        "ann@example.com",
        "ACTIVE",
        1,
    )
    assert output.headers == ()
    assert recipients[b"ann@example.com"]["state"]["recent_event_ids"] == ["e1"]
    assert "recent_event_ids" not in state, "the idempotency memory is not published"


def test_human_opens_and_a_click_are_scored_in_the_published_state() -> None:
    events = [
        canonical(EventType.OPENED, event_id=f"o{n}", at=T0 + n * 60_000) for n in range(1, 4)
    ]
    click = canonical(EventType.CLICKED, event_id="c1", at=T0 + DAY, url="https://example.com/a")
    state = state_of(feed(keeper(), {}, *events, click)[0])
    assert (state["opens"], state["clicks"], state["score"]) == (3, 1, 5 + 10 + 15)
    assert state["last_signal_at"] == T0 + DAY


def test_a_hard_bounce_publishes_the_state_and_a_suppression_caused_by_the_event() -> None:
    recipients: Table = {}
    bounce = canonical(EventType.BOUNCED, event_id="b1", bounce_class=BounceClass.HARD)
    state_output, suppression_output, scoped_output = feed(keeper(), recipients, bounce)
    state = state_of(state_output)
    assert (state["status"], state["suppression_reason"]) == ("SUPPRESSED", "HARD_BOUNCE")
    assert (state["suppression_event_id"], state["scope"]) == ("b1", "GLOBAL")
    expected = {
        "recipient": "ann@example.com",
        "reason": "HARD_BOUNCE",
        "since": T0,
        "event_id": "b1",
        "source": "event",
        "actor": None,
        "note": None,
        "scope": "GLOBAL",
        "tenant": None,
    }
    assert suppression_of(suppression_output) == expected
    assert scoped_of(scoped_output) == expected


def test_a_redelivered_suppressing_event_publishes_again_without_counting_twice() -> None:
    recipients: Table = {}
    processor = keeper()
    bounce = canonical(EventType.BOUNCED, event_id="b1", bounce_class=BounceClass.HARD)
    feed(processor, recipients, bounce)
    table_before = dict(recipients[b"ann@example.com"])
    state_output, suppression_output, scoped_output = feed(processor, recipients, bounce)
    assert state_of(state_output)["hard_bounces"] == 1
    assert suppression_of(suppression_output)["event_id"] == "b1"
    assert scoped_of(scoped_output)["event_id"] == "b1"
    assert recipients[b"ann@example.com"] == table_before


def test_a_later_event_of_a_suppressed_recipient_publishes_no_new_suppression() -> None:
    recipients: Table = {}
    bounce = canonical(EventType.BOUNCED, event_id="b1", bounce_class=BounceClass.HARD)
    later = canonical(EventType.DELIVERED, event_id="d1", at=T0 + DAY)
    (output,) = feed(keeper(), recipients, bounce, later)
    state = state_of(output)
    assert (state["status"], state["suppression_reason"]) == ("SUPPRESSED", "HARD_BOUNCE")
    assert (state["delivered"], state["updated_at"]) == (1, T0 + DAY)


def test_a_complaint_replaces_an_earlier_suppression_and_republishes_it() -> None:
    unsubscribe = canonical(EventType.UNSUBSCRIBED, event_id="u1")
    complaint = canonical(EventType.COMPLAINED, event_id="f1", at=T0 + DAY)
    state_output, suppression_output, scoped_output = feed(keeper(), {}, unsubscribe, complaint)
    state = state_of(state_output)
    assert (state["suppression_reason"], state["scope"]) == ("COMPLAINT", "TENANT")
    suppression = suppression_of(suppression_output)
    assert (suppression["reason"], suppression["event_id"]) == ("COMPLAINT", "f1")
    assert suppression["since"] == T0 + DAY
    tenant_key = b'["ann@example.com","default"]'
    assert scoped_of(scoped_output, tenant_key) == suppression


def _truncated_event() -> bytes:
    return EVENT.encode(canonical(EventType.DELIVERED))[:14]


UNDECODABLE_EVENTS = {
    "bad_magic": b'{"event_type": "DELIVERED"}',
    "unknown_schema": SINGLE_OBJECT_MARKER + b"\x00" * 8 + b"\x02",
    "corrupt_body": _truncated_event(),
}


@pytest.mark.parametrize(("kind", "value"), UNDECODABLE_EVENTS.items(), ids=UNDECODABLE_EVENTS)
def test_undecodable_event_bytes_are_dead_lettered_with_the_decode_error_kind(
    kind: str, value: bytes
) -> None:
    recipients: Table = {}
    record = only_dead_letter(keeper().process(on_events_topic(value, offset=12), recipients))
    assert record["error_kind"] == kind
    assert (record["source_topic"], record["source_offset"]) == (NAMES.events, 12)
    assert (record["payload"], record["provider"]) == (value, None)
    assert recipients == {}


def test_an_event_without_recipient_is_dead_lettered_as_unresolved() -> None:
    recipients: Table = {}
    event = canonical(EventType.OPENED, recipient=None)
    record = only_dead_letter(keeper().process(on_events_topic(event, offset=3), recipients))
    assert record["error_kind"] == "unresolved"
    assert (record["source_topic"], record["source_offset"]) == (NAMES.events, 3)
    assert recipients == {}


# --- StateKeeper: operator commands ---------------------------------------------------------


def test_a_manual_suppression_publishes_state_and_suppression_with_audit_headers() -> None:
    recipients: Table = {}
    suppress = command(
        CommandAction.SUPPRESS, reason=SuppressionReason.MANUAL, note="asked by phone"
    )
    state_output, suppression_output, scoped_output = keeper().process(
        on_commands_topic(suppress), recipients
    )
    state = state_of(state_output)
    assert (state["status"], state["suppression_reason"]) == ("SUPPRESSED", "MANUAL")
    expected = {
        "recipient": "ann@example.com",
        "reason": "MANUAL",
        "since": T0 + DAY,
        "event_id": None,
        "source": "operator",
        "actor": "ops@host",
        "note": "asked by phone",
        "scope": "GLOBAL",
        "tenant": None,
    }
    assert suppression_of(suppression_output) == expected
    assert scoped_of(scoped_output) == expected
    assert dict(state_output.headers) == audit_headers()
    assert dict(suppression_output.headers) == audit_headers()
    assert dict(scoped_output.headers) == audit_headers()
    assert "c1" in recipients[b"ann@example.com"]["state"]["recent_event_ids"]


def test_lifting_a_suppression_publishes_the_active_state_and_a_tombstone() -> None:
    recipients: Table = {}
    processor = keeper()
    feed(processor, recipients, canonical(EventType.BOUNCED, bounce_class=BounceClass.HARD))
    lift = command(CommandAction.LIFT, command_id="lift-1")
    state_output, tombstone, scoped_tombstone = processor.process(
        on_commands_topic(lift), recipients
    )
    state = state_of(state_output)
    assert (state["status"], state["suppression_reason"]) == ("ACTIVE", None)
    assert state["hard_bounces"] == 1, "lifting keeps the lifetime counters"
    assert (tombstone.topic, tombstone.key, tombstone.value) == (
        NAMES.suppressions,
        b"ann@example.com",
        None,
    )
    assert (scoped_tombstone.topic, scoped_tombstone.key, scoped_tombstone.value) == (
        NAMES.scoped_suppressions,
        GLOBAL_KEY,
        None,
    )
    assert dict(tombstone.headers) == audit_headers(command_id="lift-1")
    assert recipients[b"ann@example.com"]["state"]["status"] == "ACTIVE"


def test_lifting_a_complaint_without_force_is_refused_and_with_force_is_applied() -> None:
    recipients: Table = {}
    processor = keeper()
    feed(processor, recipients, canonical(EventType.COMPLAINED, event_id="f1"))
    table_before = dict(recipients[b"ann@example.com"])

    lift = command(CommandAction.LIFT, tenant="default")
    refused = processor.process(on_commands_topic(lift, 8), recipients)
    record = only_dead_letter(refused)
    assert record["error_kind"] == "command_refused"
    assert "force" in record["error_message"]
    assert (record["source_topic"], record["source_offset"]) == (NAMES.commands, 8)
    assert recipients[b"ann@example.com"] == table_before

    forced = command(CommandAction.LIFT, command_id="c2", force=True, tenant="default")
    state_output, tombstone, scoped = processor.process(on_commands_topic(forced, 9), recipients)
    assert state_of(state_output)["status"] == "ACTIVE"
    assert (tombstone.topic, tombstone.value) == (NAMES.suppressions, None)
    assert (scoped.topic, scoped.key, scoped.value) == (
        NAMES.scoped_suppressions,
        b'["ann@example.com","default"]',
        None,
    )


def test_a_lift_without_a_tenant_lifts_only_the_global_suppression_and_is_kept() -> None:
    """Whatever arrives first: a global lift of a recipient only tenants suppress changes
    nothing now, and is kept (a hard bounce before it may arrive later)."""
    recipients: Table = {}
    processor = keeper()
    feed(processor, recipients, canonical(EventType.UNSUBSCRIBED, event_id="u1"))
    outputs = processor.process(on_commands_topic(command(CommandAction.LIFT), 3), recipients)
    assert [output.topic for output in outputs] == [
        NAMES.recipient_state,
        NAMES.suppressions,
        NAMES.scoped_suppressions,
    ]
    state = state_of(outputs[0])
    assert (state["status"], state["scope"], state["tenant"]) == ("SUPPRESSED", "TENANT", "default")
    assert outputs[2].value is None, "the global scope: nothing to lift"
    assert "c1" in recipients[b"ann@example.com"]["state"]["recent_event_ids"]


@pytest.mark.parametrize(
    "value",
    [b"not a command", EVENT.encode(canonical(EventType.DELIVERED))],
    ids=["garbage", "an_event_on_the_commands_topic"],
)
def test_a_command_that_cannot_be_decoded_is_dead_lettered_as_invalid_command(
    value: bytes,
) -> None:
    recipients: Table = {}
    record = only_dead_letter(keeper().process(on_commands_topic(value, 2), recipients))
    assert (record["error_kind"], record["provider"]) == ("invalid_command", None)
    assert (record["source_topic"], record["source_offset"]) == (NAMES.commands, 2)
    assert record["payload"] == value
    assert recipients == {}


def test_a_reset_inactive_command_publishes_the_reset_state_but_no_suppression_record() -> None:
    recipients: Table = {}
    processor = keeper()
    feed(processor, recipients, canonical(EventType.OPENED, event_id="o1"))
    assert recipients[b"ann@example.com"]["state"]["score"] == 5
    reset = command(
        CommandAction.RESET_INACTIVE,
        command_id="sweep-1",
        actor=SWEEP_ACTOR,
        requested_at=T0 + 31 * DAY,
    )
    (output,) = processor.process(on_commands_topic(reset), recipients)
    state = state_of(output)
    assert (state["score"], state["opens_since_reset"], state["opens"]) == (0, 0, 1)
    assert state["updated_at"] == T0 + 31 * DAY
    assert dict(output.headers) == audit_headers(actor=SWEEP_ACTOR, command_id="sweep-1")


# --- The inactivity sweep -------------------------------------------------------------------


def _engaged(processor: StateKeeper, recipients: Table, address: str, at: int) -> None:
    event = canonical(EventType.OPENED, recipient=address, event_id=f"o-{address}", at=at)
    processor.process(on_events_topic(event), recipients)


def test_the_sweep_resets_only_recipients_with_a_score_and_no_signal_for_too_long() -> None:
    recipients: Table = {}
    processor = keeper()
    _engaged(processor, recipients, "stale@example.com", T0)
    _engaged(processor, recipients, "recent@example.com", T0 + 20 * DAY)
    feed(processor, recipients, canonical(EventType.DELIVERED, recipient="quiet@example.com"))
    now = T0 + 31 * DAY
    (reset,) = due_resets(recipient_records(recipients), now, POLICY)
    assert (reset.action, reset.recipient) == (CommandAction.RESET_INACTIVE, "stale@example.com")
    assert (reset.actor, reset.requested_at) == (SWEEP_ACTOR, now)
    assert list(due_resets(recipient_records(recipients), T0 + 29 * DAY, POLICY)) == []


def test_two_sweeps_before_the_reset_send_the_same_command_id_and_reset_once() -> None:
    recipients: Table = {}
    processor = keeper()
    _engaged(processor, recipients, "ann@example.com", T0)
    (first,) = due_resets(recipient_records(recipients), T0 + 31 * DAY, POLICY)
    (second,) = due_resets(recipient_records(recipients), T0 + 32 * DAY, POLICY)
    assert first.command_id == second.command_id
    assert first.command_id
    processor.process(on_commands_topic(first), recipients)
    table_after_first = dict(recipients[b"ann@example.com"])
    (output,) = processor.process(on_commands_topic(second), recipients)
    assert recipients[b"ann@example.com"] == table_after_first
    assert state_of(output)["updated_at"] == T0 + 31 * DAY, "the second sweep changed nothing"
    assert list(due_resets(recipient_records(recipients), T0 + 33 * DAY, POLICY)) == []


def test_a_new_signal_after_a_reset_gives_the_next_sweep_a_new_command_id() -> None:
    recipients: Table = {}
    processor = keeper()
    _engaged(processor, recipients, "ann@example.com", T0)
    (first,) = due_resets(recipient_records(recipients), T0 + 31 * DAY, POLICY)
    processor.process(on_commands_topic(first), recipients)
    later_open = canonical(EventType.OPENED, event_id="o-later", at=T0 + 40 * DAY)
    processor.process(on_events_topic(later_open), recipients)
    (second,) = due_resets(recipient_records(recipients), T0 + 80 * DAY, POLICY)
    assert second.command_id != first.command_id


def test_an_event_later_than_the_reorder_window_is_labelled_late_and_counted() -> None:
    """Events spanning more than the window: the oldest leave the log for the base state, and
    an event from before the log's start is applied out of order, published with `late_events`
    and counted by the worker's `mailstream_worker_late_events_total` from the output's label."""
    metrics = WorkerMetrics(NAMES)
    recipients: Table = {}
    processor = keeper()
    days = default_policy().reorder_window_hours // 24 + 3
    for n in range(days):
        outputs = feed(
            processor,
            recipients,
            canonical(EventType.DELIVERED, "ann@example.com", f"d{n}", T0 + n * DAY),
        )
        metrics.count(NAMES.events, outputs)
        assert [output.label for output in outputs] == [""]
    assert metrics.registry.get_sample_value("mailstream_worker_late_events_total") == 0.0
    too_old = canonical(EventType.OPENED, event_id="late", at=T0 + DAY // 2)
    [published] = feed(processor, recipients, too_old)
    metrics.count(NAMES.events, [published])
    assert published.label == "late"
    assert state_of(published)["late_events"] == 1
    assert metrics.registry.get_sample_value("mailstream_worker_late_events_total") == 1.0


def test_an_operator_is_named_only_on_the_suppression_its_command_made() -> None:
    """A lift processed after a later hard bounce: the refold suppresses again on that bounce,
    published as the event's (no actor), under the lift's audit headers."""
    recipients: Table = {}
    processor = keeper()
    first = canonical(EventType.BOUNCED, event_id="b1", bounce_class=BounceClass.HARD)
    later = canonical(EventType.BOUNCED, event_id="b2", at=T0 + 2 * DAY, bounce_class="HARD")
    feed(processor, recipients, first, later)
    lift = command(CommandAction.LIFT, command_id="lift-1")  # requested at T0 + DAY
    _, shown, scoped = processor.process(on_commands_topic(lift), recipients)
    for output in (shown, scoped):
        record = SUPPRESSION.decode(output.value or b"")
        assert (record["event_id"], record["source"], record["actor"]) == ("b2", "event", None)
        assert dict(output.headers) == audit_headers(command_id="lift-1")
    suppress = command(CommandAction.SUPPRESS, command_id="c9", reason=SuppressionReason.MANUAL)
    made = processor.process(on_commands_topic(suppress), {})
    assert SUPPRESSION.decode(made[1].value or b"")["actor"] == "ops@host"
