"""`mailstream dlq list|redrive`: inspect dead letters and send them back after a fix.

`list` shows the dead letters of `email.events.dlq` as a table: where each sits in the DLQ,
when it failed, its cause (error kind and message), its source coordinates, provider, whether
it was redriven, and a preview of the payload (control characters and binary made safe).

`redrive` sends each selected dead letter's payload back to its source topic and partition,
with its original key and headers plus `mailstream.redrive_count` (one more than before) and
`mailstream.redriven_from` (`<dlq topic>:<partition>:<offset>`). A webhook body whose
`mailstream.received_at` header is missing gets one with the original record's timestamp, so
the normalizer sees the same receive time as the first time. A dead letter whose payload was
cut (over 512 KiB) is not redriven: the cut copy is not the record.

The ledger. Every redrive is recorded on the compacted topic `email.events.dlq.redrives`
(`mailstream.topics.redrive_ledger_spec`), keyed by the dead letter's `<partition>:<offset>`,
valued with JSON: who (`--actor`, default user@host), when, and where the payload went. A
later redrive skips dead letters in the ledger unless `--again`. The ledger is written after
the broker has acknowledged the redriven records: a crash in between sends them again next
time, which the pipeline absorbs (the recipient rules ignore an event id they have applied
recently).

Several dead letters can share one source record: a replay dead-letters the same raw record
again (a batch webhook's unresolved events share one dead letter per processing, listing
them). Redrive sends each source record once (the newest dead letter's copy) and records all
of them.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from mailstream.commands import default_actor
from mailstream.errors import DEAD_LETTER_KINDS, MailstreamError
from mailstream.events import format_timestamp_ms
from mailstream.settings import Settings
from mailstream.streams.normalize import RECEIVED_AT_HEADER
from mailstream.streams.operations.replay import time_argument
from mailstream.streams.reader import iterate_to_end, latest_by_key, read_to_end
from mailstream.streams.records import REDRIVE_COUNT_HEADER, payload_was_cut
from mailstream.text import render_table
from mailstream.topics import TopicNames

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

REDRIVEN_FROM_HEADER = "mailstream.redriven_from"

# --kind accepts every kind the pipeline writes and any kind found in the DLQ (older versions).
KNOWN_KINDS = frozenset(kind.value for kind in DEAD_LETTER_KINDS)
LIST_COLUMNS = ("dlq", "failed at", "kind", "cause", "source", "provider", "redriven", "payload")


@dataclass(frozen=True)
class DeadLetter:
    """One decoded record of the DLQ and where it sits there."""

    topic: str
    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def ledger_key(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def source(self) -> tuple[str, int, int]:
        return (
            self.record["source_topic"],
            self.record["source_partition"],
            self.record["source_offset"],
        )

    @property
    def kind(self) -> str:
        return str(self.record["error_kind"])


@dataclass(frozen=True)
class Redrive:
    """One source record to send again, and every dead letter it answers for."""

    dead_letter: DeadLetter  # the newest copy: its payload and headers are sent
    answers_for: tuple[DeadLetter, ...]


# --- Pure parts --------------------------------------------------------------------------


def split_kinds(values: Iterable[str] | None) -> set[str]:
    """--kind values, repeated or comma-separated."""
    return {kind.strip() for value in values or () for kind in value.split(",") if kind.strip()}


def unknown_kinds(requested: Iterable[str], seen: Iterable[str]) -> list[str]:
    return sorted(set(requested) - KNOWN_KINDS - set(seen))


@dataclass
class Selection:
    letters: list[DeadLetter]  # oldest failure first
    total: int  # how many the filters select, kept or not
    seen_kinds: set[str]  # every kind read, selected or not


def select(
    dead_letters: Iterable[DeadLetter],
    since_ms: int | None,
    kinds: set[str],
    keep: int | None = None,
) -> Selection:
    """The dead letters that failed at or after `since_ms` with one of `kinds` (all if empty),
    read in one pass; with `keep`, only the `keep` newest are held (a listing of a large
    dead-letter topic costs memory for what it shows, not for what the topic holds)."""
    chosen: list[tuple[int, int, int, DeadLetter]] = []
    selection = Selection([], 0, set())
    for letter in dead_letters:
        selection.seen_kinds.add(letter.kind)
        if (since_ms is not None and letter.record["failed_at"] < since_ms) or (
            kinds and letter.kind not in kinds
        ):
            continue
        selection.total += 1
        entry = (letter.record["failed_at"], letter.partition, letter.offset, letter)
        if keep is None:
            chosen.append(entry)
        elif keep > 0:
            (heapq.heappush if len(chosen) < keep else heapq.heappushpop)(chosen, entry)
    selection.letters = [entry[3] for entry in sorted(chosen, key=lambda entry: entry[:3])]
    return selection


def plan_redrives(
    selected: Sequence[DeadLetter], ledger: Mapping[str, Any], again: bool
) -> tuple[list[Redrive], list[DeadLetter], list[DeadLetter]]:
    """(what to send, one per source record; the dead letters skipped as already redriven;
    those whose payload was cut, never sent: the cut copy is not the record)."""
    cut = [letter for letter in selected if payload_was_cut(letter.record)]
    sendable = [letter for letter in selected if not payload_was_cut(letter.record)]
    skipped = [letter for letter in sendable if not again and letter.ledger_key in ledger]
    by_source: dict[tuple[str, int, int], list[DeadLetter]] = {}
    for letter in sendable:
        if again or letter.ledger_key not in ledger:
            by_source.setdefault(letter.source, []).append(letter)
    redrives = [
        Redrive(max(group, key=lambda letter: (letter.partition, letter.offset)), tuple(group))
        for group in by_source.values()
    ]
    return redrives, skipped, cut


def redrive_count(record: Mapping[str, Any]) -> int:
    """How often the record was redriven before (the normalizer copies the count from the
    redriven record's header into its next dead letter)."""
    return int(record.get("redrive_count") or 0)


def redrive_headers(letter: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    """The original headers, the receive time kept, the redrive headers replaced."""
    record = letter.record
    headers: dict[str, str | bytes | None] = {
        name: value
        for name, value in record["headers"].items()
        if name not in (REDRIVE_COUNT_HEADER, REDRIVEN_FROM_HEADER)
    }
    if RECEIVED_AT_HEADER not in headers and record["source_timestamp"] is not None:
        headers[RECEIVED_AT_HEADER] = str(record["source_timestamp"]).encode()
    headers[REDRIVE_COUNT_HEADER] = str(redrive_count(record) + 1).encode()
    headers[REDRIVEN_FROM_HEADER] = letter.coordinates.encode()
    return list(headers.items())


def ledger_entry(letter: DeadLetter, actor: str, at_ms: int, target: str, count: int) -> bytes:
    source_topic, source_partition, source_offset = letter.source
    return orjson.dumps(
        {
            "dead_letter": letter.coordinates,
            "error_kind": letter.kind,
            "source": f"{source_topic}:{source_partition}:{source_offset}",
            "redriven_to": target,
            "redrive_count": count,
            "actor": actor,
            "at": at_ms,
        }
    )


def printable(text: str, width: int) -> str:
    """`text` on one line, control characters blanked (payloads come from the internet and
    must not drive the terminal), cut to `width` with an ellipsis."""
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def preview(payload: bytes, width: int = 40) -> str:
    """The start of a payload: text when it is printable UTF-8, else hex."""
    if not payload:
        return "(empty)"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return printable(text, width)
    shown = payload[: max(1, (width - 4) // 3)]
    return "hex " + shown.hex(" ") + ("…" if len(shown) < len(payload) else "")


def list_row(letter: DeadLetter, ledger: Mapping[str, Any]) -> list[str]:
    record = letter.record
    source_topic, source_partition, source_offset = letter.source
    redriven = ledger.get(letter.ledger_key)
    return [
        letter.ledger_key,
        format_timestamp_ms(record["failed_at"])[:19] + "Z",
        printable(letter.kind, 20),
        printable(record["error_message"], 50),
        printable(f"{source_topic}:{source_partition}:{source_offset}", 60),
        printable(record["provider"] or "-", 12),
        printable(f"{redriven['redriven_to']} by {redriven['actor']}", 50) if redriven else "-",
        preview(record["payload"]),
    ]


# --- Kafka -------------------------------------------------------------------------------


def read_dead_letters(settings: Settings, topic: str, errors: TextIO) -> Iterator[DeadLetter]:
    """The dead letters of `topic` up to its current end, one at a time."""
    from mailstream.codec import service_codec

    codec = service_codec(settings, "dead_letter")
    for record in iterate_to_end(settings, topic):
        try:
            decoded = codec.decode(record.value or b"")
        except MailstreamError as error:
            print(f"skipping {topic}:{record.partition}:{record.offset}: {error}", file=errors)
            continue
        yield DeadLetter(topic, record.partition, record.offset, decoded)


def load_ledger(settings: Settings, topic: str) -> dict[str, Any]:
    """The latest ledger entry per dead letter; {} before the first redrive."""
    latest = latest_by_key((record.key, record.value) for record in read_to_end(settings, topic))
    return {key.decode(): orjson.loads(value) for key, value in latest.items() if value is not None}


def send(settings: Settings, redrives: Sequence[Redrive], actor: str, out: TextIO) -> int:
    """Produce the redrives, then their ledger entries; returns how many failed."""
    from confluent_kafka import Producer

    from mailstream.topics import create_topics, redrive_ledger_spec

    ledger_topic = TopicNames(settings.topic_prefix).redrives
    create_topics(settings, [redrive_ledger_spec(settings)])
    producer = Producer({**settings.kafka.librdkafka_config(), "enable.idempotence": True})
    outcomes: dict[int, str] = {}

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            outcomes[index] = (
                f"error: {error.str()}"
                if error is not None
                else f"{message.topic()}:{message.partition()}:{message.offset()}"
            )

        return report

    for index, redrive in enumerate(redrives):
        letter = redrive.dead_letter
        topic, partition, _ = letter.source
        producer.produce(
            topic,
            value=letter.record["payload"],
            key=letter.record["key"],
            partition=partition,
            headers=redrive_headers(letter),
            on_delivery=delivered(index),
        )
    producer.flush(60)
    failures = 0
    now = int(time.time() * 1000)
    for index, redrive in enumerate(redrives):
        outcome = outcomes.get(index, "error: not acknowledged within 60 s")
        letter = redrive.dead_letter
        if outcome.startswith("error"):
            failures += 1
            print(f"FAILED   {letter.coordinates} ({letter.kind}): {outcome}", file=out)
            continue
        count = redrive_count(letter.record) + 1
        for answered in redrive.answers_for:
            entry = ledger_entry(answered, actor, now, outcome, count)
            producer.produce(ledger_topic, key=answered.ledger_key.encode(), value=entry)
        print(f"redriven {letter.coordinates} ({letter.kind}) -> {outcome}", file=out)
    if producer.flush(60):
        print("the ledger was not acknowledged within 60 s: a later redrive may resend", file=out)
    return failures


# --- Command line --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list dead letters, or redrive them to their source topic after a fix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    list_parser = actions.add_parser("list", help="show dead letters as a table")
    redrive_parser = actions.add_parser(
        "redrive", help="send dead letters back to their source topic"
    )
    for action in (list_parser, redrive_parser):
        action.add_argument(
            "--since",
            type=time_argument,
            metavar="TIME",
            help="only those that failed at or after TIME (ISO 8601, epoch ms, or 30m/2h/7d ago)",
        )
        action.add_argument(
            "--kind",
            action="append",
            metavar="KIND",
            help="only this error kind (repeat or comma-separate for several): "
            + ", ".join(sorted(KNOWN_KINDS)),
        )
    list_parser.add_argument(
        "--limit", type=int, default=50, metavar="N", help="show the newest N (default 50)"
    )
    list_parser.set_defaults(handler=run_list)
    redrive_parser.add_argument(
        "--dry-run", action="store_true", help="show what would be sent; send nothing"
    )
    redrive_parser.add_argument(
        "--again", action="store_true", help="also send dead letters redriven before"
    )
    redrive_parser.add_argument("--actor", default=None, help="who redrives (default: user@host)")
    redrive_parser.set_defaults(handler=run_redrive)


def run_list(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    names = TopicNames(settings.topic_prefix)
    selection = _selected(settings, args, keep=max(args.limit, 0))
    if selection is None:
        return 2
    ledger = load_ledger(settings, names.redrives)
    shown = selection.letters
    if shown:
        print(render_table(LIST_COLUMNS, [list_row(letter, ledger) for letter in shown]))
    print(f"{selection.total} dead letter(s) in {names.dead_letters}, {len(shown)} shown")
    return 0


def run_redrive(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    selection = _selected(settings, args)
    if selection is None:
        return 2
    ledger = load_ledger(settings, TopicNames(settings.topic_prefix).redrives)
    redrives, skipped, cut = plan_redrives(selection.letters, ledger, args.again)
    for letter in cut:
        topic, partition, offset = letter.source
        print(
            f"not redriving {letter.coordinates}: its payload was cut; the whole record is "
            f"{topic}:{partition}:{offset}"
        )
    if args.dry_run:
        for redrive in redrives:
            letter = redrive.dead_letter
            topic, partition, _ = letter.source
            print(f"would redrive {letter.coordinates} ({letter.kind}) -> {topic}:{partition}")
        failures = 0
    else:
        failures = send(settings, redrives, args.actor or default_actor(), sys.stdout)
    answered = sum(len(redrive.answers_for) for redrive in redrives)
    verb = "would redrive" if args.dry_run else "redriven"
    print(
        f"{verb} {len(redrives) - failures} source record(s) for {answered} dead letter(s); "
        f"{len(skipped)} skipped as redriven before (--again sends them again); "
        f"{len(cut)} not redriven (payload cut)"
    )
    return 1 if failures else 0


def _selected(
    settings: Settings, args: argparse.Namespace, keep: int | None = None
) -> Selection | None:
    """The dead letters the filters select; None (after saying why) for an unknown kind."""
    letters = read_dead_letters(
        settings, TopicNames(settings.topic_prefix).dead_letters, sys.stderr
    )
    kinds = split_kinds(args.kind)
    selection = select(letters, args.since, kinds, keep)
    seen = selection.seen_kinds
    unknown = unknown_kinds(kinds, seen)
    if unknown:
        print(
            f"mailstream dlq: unknown kind {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_KINDS | seen))}",
            file=sys.stderr,
        )
        return None
    return selection
