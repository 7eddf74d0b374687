from __future__ import annotations

from mailstream.codec import codec_for
from mailstream.streams.records import (
    MAX_DEAD_LETTER_PAYLOAD,
    REDRIVE_COUNT_HEADER,
    SourceRecord,
    dead_letter,
    payload_was_cut,
)


def test_a_dead_letter_keeps_its_cause_coordinates_and_redrive_count() -> None:
    codec = codec_for("dead_letter")
    source = SourceRecord(
        topic="email.raw.maileroo",
        partition=3,
        offset=41,
        timestamp=1_700_000_000_000,
        key=b"m1",
        value=b"\xff\xfenot json",
        headers=[(REDRIVE_COUNT_HEADER, b"2"), ("x", None)],
    )
    output = dead_letter(
        codec, "email.events.dlq", source, "not_utf8", "body is not UTF-8", "maileroo"
    )
    record = codec.decode(output.value or b"")
    assert (output.topic, output.key) == ("email.events.dlq", b"m1")
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "email.raw.maileroo",
        3,
        41,
    )
    assert record["payload"] == b"\xff\xfenot json"
    assert (record["error_kind"], record["error_message"], record["provider"]) == (
        "not_utf8",
        "body is not UTF-8",
        "maileroo",
    )
    assert record["redrive_count"] == 2
    assert record["headers"] == {REDRIVE_COUNT_HEADER: b"2", "x": b""}


def test_a_payload_over_the_limit_is_cut_and_the_message_says_where_the_whole_record_is() -> None:
    codec = codec_for("dead_letter")
    body = b"x" * (MAX_DEAD_LETTER_PAYLOAD * 2)
    source = SourceRecord("email.raw.maileroo", 2, 77, 1_700_000_000_000, b"m1", body)
    record = codec.decode(
        dead_letter(codec, "dlq", source, "invalid_json", "not JSON", "maileroo").value or b""
    )
    assert record["payload"] == body[:MAX_DEAD_LETTER_PAYLOAD]
    assert record["error_message"].startswith("not JSON (payload cut")
    assert "email.raw.maileroo partition 2 offset 77" in record["error_message"]
    assert payload_was_cut(record)
    whole = SourceRecord("email.raw.maileroo", 2, 78, None, b"m1", body[:MAX_DEAD_LETTER_PAYLOAD])
    assert not payload_was_cut(
        codec.decode(dead_letter(codec, "dlq", whole, "invalid_json", "x", None).value or b"")
    )
