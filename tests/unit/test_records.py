from __future__ import annotations

from mailstream.codec import codec_for
from streams.records import REDRIVE_COUNT_HEADER, SourceRecord, dead_letter


def test_a_dead_letter_keeps_its_cause_coordinates_and_redrive_count() -> None:
    codec = codec_for("dead_letter")
    source = SourceRecord(
        topic="email.raw.maileroo", partition=3, offset=41, timestamp=1_700_000_000_000,
        key=b"m1", value=b"\xff\xfenot json", headers=[(REDRIVE_COUNT_HEADER, b"2"), ("x", None)],
    )
    output = dead_letter(codec, "email.events.dlq", source, "not_utf8", "body is not UTF-8", "maileroo")
    record = codec.decode(output.value or b"")
    assert (output.topic, output.key) == ("email.events.dlq", b"m1")
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == ("email.raw.maileroo", 3, 41)
    assert record["payload"] == b"\xff\xfenot json"
    assert (record["error_kind"], record["error_message"], record["provider"]) == ("not_utf8", "body is not UTF-8", "maileroo")
    assert record["redrive_count"] == 2
    assert record["headers"] == {REDRIVE_COUNT_HEADER: b"2", "x": b""}
