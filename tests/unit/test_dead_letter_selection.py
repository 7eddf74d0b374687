"""The pure parts of `mailstream dlq`: selection, kinds, redrive plan and headers, display."""

from __future__ import annotations

from typing import Any

from mailstream.codec import codec_for
from mailstream.streams.normalize import RECEIVED_AT_HEADER
from mailstream.streams.operations.dead_letters import (
    REDRIVE_COUNT_HEADER,
    REDRIVEN_FROM_HEADER,
    DeadLetter,
    list_row,
    plan_redrives,
    preview,
    printable,
    redrive_count,
    redrive_headers,
    render_table,
    select,
    split_kinds,
    unknown_kinds,
)
from mailstream.streams.records import MAX_DEAD_LETTER_PAYLOAD, SourceRecord, dead_letter

T0 = 1_700_000_000_000


def letter(
    offset: int,
    kind: str = "invalid_json",
    failed_at: int = T0,
    source_offset: int | None = None,
    **fields: Any,
) -> DeadLetter:
    record = {
        "source_topic": "email.raw.maileroo",
        "source_partition": 1,
        "source_offset": offset if source_offset is None else source_offset,
        "source_timestamp": T0 - 5_000,
        "key": b"m1",
        "payload": b'{"event_type": "delivered"}',
        "headers": {},
        "error_kind": kind,
        "error_message": "expected a JSON object",
        "failed_at": failed_at,
        "provider": "maileroo",
        "redrive_count": 0,
    } | fields
    return DeadLetter("email.events.dlq", 0, offset, record)


def test_select_filters_by_time_and_kind_oldest_first() -> None:
    letters = [
        letter(1, failed_at=T0 + 20),
        letter(2, "unresolved", T0 + 10),
        letter(3, failed_at=T0 - 10),
    ]
    assert [d.offset for d in select(letters, None, set()).letters] == [3, 2, 1]
    assert [d.offset for d in select(letters, T0, set()).letters] == [2, 1]
    assert [d.offset for d in select(letters, None, {"unresolved"}).letters] == [2]


def test_a_listing_keeps_only_the_newest_it_shows_and_counts_the_rest() -> None:
    letters = (letter(offset, failed_at=T0 + offset % 7) for offset in range(10_000))
    selection = select(letters, None, {"invalid_json"}, keep=3)
    assert selection.total == 10_000
    assert [(d.record["failed_at"], d.offset) for d in selection.letters] == [
        (T0 + 6, 9_981),
        (T0 + 6, 9_988),
        (T0 + 6, 9_995),
    ]
    assert selection.seen_kinds == {"invalid_json"}
    assert select([letter(1)], None, set(), keep=0).letters == []


def test_kinds_may_be_repeated_or_comma_separated() -> None:
    assert split_kinds(["invalid_json,unresolved", " bad_magic "]) == {
        "invalid_json",
        "unresolved",
        "bad_magic",
    }
    assert split_kinds(None) == set()


def test_a_kind_is_known_when_the_pipeline_writes_it_or_the_dlq_holds_it() -> None:
    assert unknown_kinds({"invalid_json", "from_the_future", "typo"}, {"from_the_future"}) == [
        "typo"
    ]


def test_redrive_plan_skips_the_ledger_and_sends_each_source_record_once() -> None:
    replayed_twice = [letter(1, source_offset=7), letter(4, source_offset=7)]
    letters = [*replayed_twice, letter(2), letter(3)]
    redrives, skipped, cut = plan_redrives(letters, {"0:3": {"actor": "ann"}}, again=False)
    assert [r.dead_letter.offset for r in redrives] == [4, 2]
    assert [d.offset for d in redrives[0].answers_for] == [1, 4]
    assert [d.offset for d in skipped] == [3]
    assert cut == []
    redrives, skipped, _ = plan_redrives(letters, {"0:3": {}}, again=True)
    assert [r.dead_letter.offset for r in redrives] == [4, 2, 3]
    assert skipped == []


def test_a_dead_letter_whose_payload_was_cut_is_never_redriven() -> None:
    source = SourceRecord(
        "email.raw.maileroo", 1, 9, T0, b"m1", b"x" * (MAX_DEAD_LETTER_PAYLOAD + 1)
    )
    output = dead_letter(
        codec_for("dead_letter"), "email.events.dlq", source, "invalid_json", "not JSON", "maileroo"
    )
    oversized = DeadLetter(
        "email.events.dlq", 0, 5, codec_for("dead_letter").decode(output.value or b"")
    )
    redrives, skipped, cut = plan_redrives([oversized, letter(6)], {}, again=True)
    assert [r.dead_letter.offset for r in redrives] == [6]
    assert (skipped, [d.offset for d in cut]) == ([], [5])


def test_redrive_headers_keep_the_originals_count_and_point_back() -> None:
    original = letter(
        5,
        headers={"x-trace": b"abc", REDRIVE_COUNT_HEADER: b"1", REDRIVEN_FROM_HEADER: b"old"},
        redrive_count=1,
    )
    assert redrive_count(original.record) == 1
    assert dict(redrive_headers(original)) == {
        "x-trace": b"abc",
        RECEIVED_AT_HEADER: str(T0 - 5_000).encode(),
        REDRIVE_COUNT_HEADER: b"2",
        REDRIVEN_FROM_HEADER: b"email.events.dlq:0:5",
    }
    received = letter(6, headers={RECEIVED_AT_HEADER: b"123"}, redrive_count=3)
    headers = dict(redrive_headers(received))
    assert headers[RECEIVED_AT_HEADER] == b"123"
    assert headers[REDRIVE_COUNT_HEADER] == b"4"


def test_previews_are_safe_for_terminals_and_binary() -> None:
    assert preview(b'{"a":\n 1}') == '{"a": 1}'
    assert preview(b"") == "(empty)"
    assert preview(b"\xc3\x01\x00\xff" * 20, width=16) == "hex c3 01 00 ff…"
    assert preview(b"ab\x1b[31mred") == "hex 61 62 1b 5b 33 31 6d 72 65 64"
    assert printable("x" * 60, 10) == "xxxxxxxxx…"
    assert printable("line\nbreak\x1b[2J", 40) == "line break [2J"


def test_list_row_and_table() -> None:
    row = list_row(
        letter(9), {"0:9": {"redriven_to": "email.raw.maileroo:1:20", "actor": "ann@host"}}
    )
    assert row[:3] == ["0:9", "2023-11-14T22:13:20Z", "invalid_json"]
    assert row[4] == "email.raw.maileroo:1:9"
    assert row[6] == "email.raw.maileroo:1:20 by ann@host"
    assert list_row(letter(9), {})[6] == "-"
    assert render_table(("a", "bb"), [["xyz", "1"]]) == "a    bb\n---  --\nxyz  1"
