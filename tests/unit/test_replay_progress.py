"""The pure parts of `mailstream replay`: time arguments, progress, stale keys."""

from __future__ import annotations

import argparse
import io

import pytest

from mailstream.streams.operations.replay import (
    ProgressPrinter,
    format_duration,
    format_progress,
    format_summary,
    records_between,
    records_done,
    stale_keys,
    time_argument,
)
from mailstream.streams.reader import live_keys
from mailstream.streams.records import SourceRecord
from mailstream.times import parse_instant_ms
from mailstream.topics import changelog_topics

NOW = 1_763_900_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20.250Z", 1_700_000_000_250),
        (" 90s ", NOW - 90_000),
        ("30m", NOW - 1_800_000),
        ("2h", NOW - 7_200_000),
        ("7d", NOW - 7 * 86_400_000),
    ],
)
def test_times_are_iso_8601_epoch_ms_or_a_duration_ago(text: str, expected: int) -> None:
    assert parse_instant_ms(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "-5", "12:00", "2023-13-01"])
def test_malformed_times_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601.*epoch milliseconds.*duration ago"):
        parse_instant_ms(text, NOW)


def test_time_argument_is_an_argparse_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        time_argument("soon")


def test_done_counts_committed_records_between_start_and_end() -> None:
    start = {("raw", 0): 10, ("raw", 1): 0}
    end = {("raw", 0): 110, ("raw", 1): 50}
    assert records_between(start, end) == 150
    assert records_done(start, end, {}) == 0
    assert records_done(start, end, {("raw", 0): 60}) == 50
    # Past the captured end (records arrived meanwhile) counts as done, never more.
    assert records_done(start, end, {("raw", 0): 500, ("raw", 1): 50}) == 150
    assert records_done(start, end, {("raw", 0): 3}) == 0


def test_progress_shows_counts_rate_and_eta() -> None:
    assert format_progress("replayed", 1_000, 5_000, 10.0) == (
        "replayed 1,000 of 5,000 records (20.0%), 100 records/s, ETA 0:40"
    )
    assert format_progress("replayed", 0, 5_000, 0.0).endswith("0 records/s, ETA ?")
    assert "(100.0%)" in format_progress("applied", 0, 0, 1.0)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (9.4, "0:09"), (725, "12:05"), (3723, "1:02:03")]
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_summary_states_what_was_done() -> None:
    assert format_summary(5_000, 50.0, 812, 3) == (
        "replay done: 5,000 records replayed in 0:50 (100 records/s); "
        "812 recipients published, 3 stale keys tombstoned"
    )


def record(key: bytes, value: bytes | None, partition: int = 0) -> SourceRecord:
    return SourceRecord("t", partition, 0, None, key, value)


def test_keys_live_before_and_not_rewritten_need_a_tombstone() -> None:
    before = live_keys(
        [
            record(b"a", b"1", 1),
            record(b"b", b"1"),
            record(b"c", b"1"),
            record(b"c", None),
            record(b"d", b"1"),
        ]
    )
    assert before == {b"a": 1, b"b": 0, b"d": 0}
    assert stale_keys(before, [record(b"b", b"2"), record(b"d", None)]) == {b"a": 1}


def test_changelog_topics_follow_faust_naming() -> None:
    assert changelog_topics("app") == [
        "app-messages-changelog",
        "app-recipients-changelog",
        "app-deliverability-changelog",
    ]


def test_progress_updates_one_line_on_a_terminal() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, interactive=True)
    printer.show("a")
    printer.show("b")
    printer.finish("c")
    assert out.getvalue() == "\r\x1b[Ka\r\x1b[Kb\r\x1b[Kc\n"


def test_progress_prints_plain_lines_now_and_then_elsewhere() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, interactive=False)
    printer.show("a")
    printer.show("b")  # within the plain-line interval: left out
    printer.finish("c")
    assert out.getvalue() == "a\nc\n"
