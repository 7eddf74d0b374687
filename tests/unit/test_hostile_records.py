"""Hostile records on every input topic: each costs at most one bounded dead letter, never an
exception out of a processor, and commands are checked before they touch the table."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstream.commands import CommandAction, OperatorCommand
from mailstream.events import EventType
from mailstream.streams.normalize import MAX_LISTED_UNRESOLVED
from mailstream.streams.records import (
    MAX_DEAD_LETTER_HEADERS,
    MAX_DEAD_LETTER_PAYLOAD,
    REDRIVE_COUNT_HEADER,
    Output,
    SourceRecord,
    partition_of,
)
from tests.unit.test_processors import (
    COMMAND,
    DEAD_LETTER,
    NAMES,
    PARTITIONS,
    T0,
    Table,
    canonical,
    command,
    keeper,
    normalizer,
    on_commands_topic,
    on_events_topic,
)

ANN = b"ann@example.com"
UNRESOLVABLE_OPEN = {
    "event_type": "message.opened",
    "inbox_id": "inb",
    "created_at": "2023-11-14T22:13:20.000Z",
}


def dead_letters(outputs: list[Output]) -> list[dict[str, Any]]:
    return [
        DEAD_LETTER.decode(output.value or b"")
        for output in outputs
        if output.topic == NAMES.dead_letters
    ]


def raw_mailbot(body: bytes, headers: tuple[tuple[str, bytes | None], ...] = ()) -> SourceRecord:
    return SourceRecord(NAMES.raw("mailbot"), 1, 7, T0, b"m1", body, headers)


def test_a_batch_of_ten_thousand_unresolvable_events_costs_one_small_dead_letter() -> None:
    body = orjson.dumps([dict(UNRESOLVABLE_OPEN, event_id=f"e{n}") for n in range(10_000)])
    outputs = normalizer().process(raw_mailbot(body), {})
    (letter,) = dead_letters(outputs)
    assert outputs[0].topic == NAMES.dead_letters and len(outputs) == 1
    assert letter["error_kind"] == "unresolved"
    assert body.startswith(letter["payload"])  # the payload once (cut over 512 KiB)
    message = letter["error_message"]
    assert message.startswith("10000 of 10000 events unresolved: event 0 (e0): no recipient")
    assert f"event {MAX_LISTED_UNRESOLVED - 1} (e{MAX_LISTED_UNRESOLVED - 1})" in message
    assert f"(e{MAX_LISTED_UNRESOLVED})" not in message
    assert f"; and {10_000 - MAX_LISTED_UNRESOLVED} more (payload cut" in message
    assert len(outputs[0].value or b"") < MAX_DEAD_LETTER_PAYLOAD + 16_384


def test_resolved_events_of_a_batch_are_published_beside_its_one_dead_letter() -> None:
    good = dict(UNRESOLVABLE_OPEN, event_id="ok", recipient="ann@example.com")
    body = orjson.dumps([good, dict(UNRESOLVABLE_OPEN, event_id="bad")])
    outputs = normalizer().process(raw_mailbot(body), {})
    assert [output.topic for output in outputs] == [NAMES.events, NAMES.dead_letters]
    assert dead_letters(outputs)[0]["error_message"].startswith("1 of 2 events unresolved: event 1")


def test_headers_are_read_defensively() -> None:
    body = orjson.dumps(dict(UNRESOLVABLE_OPEN, event_id="e1", recipient="ann@example.com"))
    hostile = (
        (REDRIVE_COUNT_HEADER, b"abc"),
        ("mailstream.received_at", b"9" * 30),
    )
    (output,) = normalizer().process(raw_mailbot(body, hostile), {})
    assert output.topic == NAMES.events
    event = codec_event(output)
    assert event["received_at"] == T0  # the record's timestamp: the header is no time
    past_9999 = ((REDRIVE_COUNT_HEADER, b"1"), ("mailstream.received_at", b"9" * 18))
    (output,) = normalizer().process(raw_mailbot(body, past_9999), {})
    assert codec_event(output)["received_at"] == T0
    letter = only_letter(normalizer().process(raw_mailbot(b"{", hostile), {}))
    assert letter["redrive_count"] == 0
    assert letter["headers"][REDRIVE_COUNT_HEADER] == b"abc"


def test_a_dead_letter_keeps_a_bounded_number_of_headers_and_says_so() -> None:
    headers = tuple((f"h{n}", b"v" * 100) for n in range(10_000))
    letter = only_letter(normalizer().process(raw_mailbot(b"{", headers), {}))
    assert len(letter["headers"]) == MAX_DEAD_LETTER_HEADERS
    left_out = 10_000 - MAX_DEAD_LETTER_HEADERS
    assert f"{left_out} of 10000 headers left out" in letter["error_message"]


header_names = st.text(max_size=40)
header_values = st.one_of(st.none(), st.binary(max_size=60), st.sampled_from([b"9" * 30, b"-1"]))
hostile_headers = st.lists(st.tuples(header_names, header_values), max_size=8).map(tuple)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=hostile_headers,
    value=st.one_of(st.none(), st.binary(max_size=200)),
    key=st.one_of(st.none(), st.binary(max_size=40)),
    topic=st.sampled_from(["raw", "events", "commands"]),
)
def test_any_record_is_processed_or_dead_lettered_and_never_raises(
    headers: tuple[tuple[str, bytes | None], ...],
    value: bytes | None,
    key: bytes | None,
    topic: str,
) -> None:
    if topic == "raw":
        record = SourceRecord(NAMES.raw("maileroo"), 0, 3, T0, key, value, headers)
        outputs = normalizer().process(record, {})
    else:
        name = NAMES.events if topic == "events" else NAMES.commands
        outputs = keeper().process(SourceRecord(name, 0, 3, T0, key, value, headers), {})
    letters = dead_letters(outputs)
    assert len(letters) <= 1
    if not [output for output in outputs if output.topic != NAMES.dead_letters]:
        (letter,) = letters
        assert (letter["source_topic"], letter["source_offset"]) == (record_topic(topic), 3)


@settings(max_examples=100, deadline=None)
@given(headers=hostile_headers)
def test_a_valid_record_with_hostile_headers_is_still_processed(
    headers: tuple[tuple[str, bytes | None], ...],
) -> None:
    body = orjson.dumps(dict(UNRESOLVABLE_OPEN, event_id="e1", recipient="ann@example.com"))
    (output,) = normalizer().process(raw_mailbot(body, headers), {})
    assert output.topic == NAMES.events
    recipients: Table = {}
    event = on_events_topic(canonical(EventType.DELIVERED))
    outputs = keeper().process(
        SourceRecord(event.topic, 0, 0, T0, event.key, event.value, headers), recipients
    )
    assert outputs[0].topic == NAMES.recipient_state
    assert ANN in recipients


def test_an_event_keyed_other_than_by_its_recipient_is_dead_lettered_as_misplaced() -> None:
    event = on_events_topic(canonical(EventType.DELIVERED))
    recipients: Table = {}
    moved = SourceRecord(event.topic, 0, 0, T0, b"bob@example.com", event.value)
    letter = only_letter(keeper().process(moved, recipients))
    assert letter["error_kind"] == "misplaced"
    assert recipients == {}


def hostile_commands() -> list[tuple[str, SourceRecord]]:
    valid = command(CommandAction.SUPPRESS)
    right_partition = partition_of(ANN, PARTITIONS)

    def record(
        value: OperatorCommand,
        key: bytes = ANN,
        partition: int = right_partition,
        written_at: int | None = None,
    ) -> SourceRecord:
        body = COMMAND.encode(value.to_record())
        stamp = value.requested_at if written_at is None else written_at
        return SourceRecord(NAMES.commands, partition, 0, stamp, key, body)

    def changed(**fields: Any) -> OperatorCommand:
        return command(CommandAction.SUPPRESS, **fields)

    return [
        ("empty recipient", record(changed(recipient=""), key=b"")),
        ("not an address", record(changed(recipient="ann"), key=b"ann")),
        ("not canonical", record(changed(recipient="Ann@Example.com"), key=b"Ann@Example.com")),
        ("key of another", record(valid, key=b"bob@example.com")),
        ("wrong partition", record(valid, partition=(right_partition + 1) % PARTITIONS)),
        ("far future", record(changed(requested_at=2**62), written_at=T0)),
        ("long before written", record(valid, written_at=valid.requested_at + 2 * 86_400_000)),
        ("overlong command id", record(changed(command_id="c" * 1_000))),
    ]


def test_commands_that_do_not_belong_are_dead_lettered_before_touching_the_table() -> None:
    for what, record in hostile_commands():
        recipients: Table = {}
        outputs = keeper().process(record, recipients)
        assert [output.topic for output in outputs] == [NAMES.dead_letters], what
        letter = only_letter(outputs)
        assert letter["error_kind"] == "invalid_command", what
        assert recipients == {}, what
    recipients = {}
    outputs = keeper().process(on_commands_topic(command(CommandAction.SUPPRESS)), recipients)
    assert [output.topic for output in outputs] == [
        NAMES.recipient_state,
        NAMES.suppressions,
        NAMES.scoped_suppressions,
    ]


def record_topic(topic: str) -> str:
    return {"raw": NAMES.raw("maileroo"), "events": NAMES.events}.get(topic, NAMES.commands)


def only_letter(outputs: list[Output]) -> dict[str, Any]:
    (letter,) = dead_letters(outputs)
    assert len(outputs) == 1
    return letter


def codec_event(output: Output) -> dict[str, Any]:
    from tests.unit.test_processors import EVENT

    return EVENT.decode(output.value or b"")
