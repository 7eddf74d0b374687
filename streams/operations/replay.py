"""`mailstream replay [--from TIME] [--yes]`: rebuild all derived state from the raw topics.

Derived state is everything the worker computes: the Faust tables `messages` and `recipients`
(with their changelog topics), `email.recipient-state` and `email.suppressions`. Its inputs
are the raw topics and `email.commands` (operator decisions), both kept forever; replay reads
them and never writes them.

The procedure. The operator stops every worker first; replay refuses to start while the
consumer group (`settings.app_id`) has members.

1. Capture: the end offsets of the inputs (the work to do) and of email.events, and the keys
   the two published topics hold now.
2. Reset: delete the consumer group and the changelog topics `<app_id>-messages-changelog`
   and `<app_id>-recipients-changelog`, and wait until the broker no longer knows them. With
   an on-disk store (rocksdb://) this host's table data under `data_dir/<app_id>` goes too;
   other hosts running workers must delete theirs before starting again.
3. Position: commit the group's starting offsets: raw topics at the beginning, or at the
   first record at or after --from (`offsets_for_times`); email.commands at the beginning
   (always: a manual suppression older than --from must survive it); email.events at its
   current end, so events normalized before the replay are not applied a second time.
4. Rebuild: run one worker (no web server, no inactivity sweep) until the group's committed
   offsets reach the input ends captured in step 1, then until the state agent has consumed
   email.events up to its end, and stop it. Faust commits every ~3 s, so progress lags.
5. Clean up: a compacted topic keeps a key's old value until a new one overwrites it, so a
   recipient the rebuild did not republish (known only from events before --from, or whose
   events a fix now drops) would keep its stale state or suppression forever. Replay writes a
   tombstone for every key that was live before and was not written during the rebuild, on
   both published topics, to the partition that holds the key.

What an operator should know:
- A --from replay forgets every event before TIME: suppressions caused by older bounces and
  complaints are tombstoned. Operator commands are kept (step 3).
- email.events and email.events.dlq receive the re-derived events and dead letters again
  (same event ids): consumers of email.events dedupe by event_id, and `mailstream dlq
  redrive` sends one dead letter per source record.
- The commands are all there at once while the events are re-derived, so most apply before
  the events they followed. Suppression is sticky: a lift of an event-caused suppression is
  undone when that event is replayed after it, and must be issued again. The error is on the
  safe side: applying commands early never un-suppresses anyone.
- Order holds within a partition, not across them: Faust reads its partitions round-robin,
  not by time, and the messages of one recipient sit on different partitions (keyed by
  message id). The rules take maxima and ignore old events for the inactivity reset, so the
  result can only differ where order is the meaning (a soft bounce before or after a
  delivery, which cause suppressed first) for a recipient whose messages' events interleave.
- The rebuild runs the current code and policy: that is the point after a fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mailstream.events import format_timestamp_ms
from mailstream.settings import Settings
from mailstream.topics import TopicNames
from mailstream.streams.reader import Partition, latest_by_key, read_to_end
from mailstream.streams.records import SourceRecord

if TYPE_CHECKING:
    import subprocess

    from confluent_kafka.admin import AdminClient

Offsets = dict[Partition, int]

TABLES = ("messages", "recipients")  # the Faust tables of streams/app.py
STALL_SECONDS = 300.0
PROGRESS_EVERY_SECONDS = 1.0
PLAIN_PROGRESS_EVERY_SECONDS = 5.0
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ReplayError(RuntimeError):
    """Replay cannot go on; the message says why and what to do."""


# --- Pure parts --------------------------------------------------------------------------


def parse_time(text: str, now_ms: int) -> int:
    """Epoch milliseconds of ISO 8601 (UTC when no offset is given), epoch milliseconds, or a
    duration ago (`90s`, `30m`, `2h`, `7d`); ValueError with the accepted forms otherwise."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    relative = _RELATIVE.match(value)
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: expected ISO 8601 (2026-11-23T12:00:00Z), "
            "epoch milliseconds, or a duration ago (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def time_argument(text: str) -> int:
    """`parse_time` as an argparse type: a malformed time exits 2 with the reason."""
    try:
        return parse_time(text, int(time.time() * 1000))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def records_between(start: Offsets, end: Offsets) -> int:
    return sum(max(0, high - start.get(partition, 0)) for partition, high in end.items())


def records_done(start: Offsets, end: Offsets, committed: Mapping[Partition, int]) -> int:
    """How many of the records between `start` and `end` the committed offsets cover."""
    done = 0
    for partition, high in end.items():
        low = start.get(partition, 0)
        done += max(0, min(committed.get(partition, low), high) - low)
    return done


def format_duration(seconds: float) -> str:
    """0:09, 12:05, 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(label: str, done: int, total: int, elapsed: float) -> str:
    """e.g. `replayed 1,234 of 5,000 records (24.7%), 410 records/s, ETA 0:09`."""
    percent = 100.0 if total == 0 else 100.0 * done / total
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = format_duration((total - done) / rate) if rate > 0 else "?"
    return f"{label} {done:,} of {total:,} records ({percent:.1f}%), {rate:,.0f} records/s, ETA {eta}"


def format_summary(records: int, elapsed: float, recipients: int, tombstones: int) -> str:
    rate = records / elapsed if elapsed > 0 else 0.0
    return (
        f"replay done: {records:,} records replayed in {format_duration(elapsed)} "
        f"({rate:,.0f} records/s); {recipients:,} recipients published, "
        f"{tombstones:,} stale keys tombstoned"
    )


def live_keys(records: Iterable[SourceRecord]) -> dict[bytes, int]:
    """Key -> partition of every key whose latest value is not a tombstone."""
    latest = latest_by_key((record.key, record) for record in records)
    return {key: record.partition for key, record in latest.items() if record.value is not None}


def stale_keys(live_before: Mapping[bytes, int], written: Iterable[SourceRecord]) -> dict[bytes, int]:
    """The keys live before the rebuild that it did not write: they need a tombstone."""
    rewritten = {record.key for record in written}
    return {key: partition for key, partition in live_before.items() if key not in rewritten}


def changelog_topics(app_id: str) -> list[str]:
    return [f"{app_id}-{table}-changelog" for table in TABLES]


class ProgressPrinter:
    """One updating line on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self._out = out
        self._interactive = interactive
        self._last_plain = float("-inf")

    def show(self, line: str) -> None:
        if self._interactive:
            self._out.write(f"\r\x1b[K{line}")
            self._out.flush()
        elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_EVERY_SECONDS:
            self._last_plain = time.monotonic()
            print(line, file=self._out, flush=True)

    def finish(self, line: str) -> None:
        prefix = "\r\x1b[K" if self._interactive else ""
        print(f"{prefix}{line}", file=self._out, flush=True)
        self._last_plain = float("-inf")


# --- Reading topics ----------------------------------------------------------------------


# --- The consumer group and topics, through the admin client -------------------------------


def partitions_of(admin: AdminClient, topics: Iterable[str]) -> list[Partition]:
    metadata = admin.list_topics(timeout=15).topics
    partitions: list[Partition] = []
    for topic in topics:
        if topic not in metadata:
            raise ReplayError(f"topic {topic} does not exist: run `mailstream topics create`")
        partitions.extend((topic, number) for number in sorted(metadata[topic].partitions))
    return partitions


def list_offsets(admin: AdminClient, partitions: Iterable[Partition], at_ms: int | None = None) -> Offsets:
    """The end offsets of `partitions`; with `at_ms`, the offset of the first record at or after
    that time (the end offset where there is none)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = list(partitions)
    if not wanted:
        return {}
    spec = OffsetSpec.latest() if at_ms is None else OffsetSpec.for_timestamp(at_ms)
    futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in wanted}, request_timeout=30)
    offsets = {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
    if at_ms is not None:
        ends = list_offsets(admin, [p for p, offset in offsets.items() if offset < 0])
        offsets.update(ends)
    return offsets


def beginning_offsets(admin: AdminClient, partitions: Iterable[Partition]) -> Offsets:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    futures = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.earliest() for t, p in partitions}, request_timeout=30
    )
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def committed_offsets(admin: AdminClient, group: str) -> Offsets:
    from confluent_kafka import ConsumerGroupTopicPartitions

    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or () if tp.offset >= 0}


def group_state(admin: AdminClient, group: str) -> tuple[str, int]:
    """(state name, number of members) of a consumer group; ("DEAD", 0) when it is gone."""
    description = admin.describe_consumer_groups([group], request_timeout=30)[group].result()
    return description.state.name, len(description.members)


def delete_group(admin: AdminClient, group: str, timeout: float = 60) -> None:
    from confluent_kafka import KafkaError, KafkaException

    try:
        admin.delete_consumer_groups([group], request_timeout=30)[group].result()
    except KafkaException as error:
        if error.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise ReplayError(f"cannot delete consumer group {group}: {error.args[0].str()}") from None
    _wait(lambda: group_state(admin, group)[0] == "DEAD", timeout, f"consumer group {group} deleted")


def delete_topics(admin: AdminClient, topics: list[str], timeout: float = 60) -> list[str]:
    """Delete those of `topics` that exist and wait until the broker lists none of them."""
    existing = [topic for topic in topics if topic in admin.list_topics(timeout=15).topics]
    if existing:
        for future in admin.delete_topics(existing, operation_timeout=30).values():
            future.result()
    _wait(
        lambda: not set(existing) & set(admin.list_topics(timeout=15).topics),
        timeout,
        f"topics {', '.join(existing)} deleted",
    )
    return existing


def commit_offsets(admin: AdminClient, group: str, offsets: Offsets) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t, p, offset) for (t, p), offset in sorted(offsets.items())]
    )
    admin.alter_consumer_group_offsets([request], request_timeout=30)[group].result()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ReplayError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.2)


# --- The replay ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplayPlan:
    group: str
    from_ms: int | None
    starts: Offsets  # what the group starts from: inputs and email.events
    input_ends: Offsets  # the inputs' ends at the start: the work to do
    published_ends: Offsets  # the published topics' ends at the start
    live_before: dict[str, dict[bytes, int]]  # published topic -> live key -> partition

    @property
    def total(self) -> int:
        return records_between(self.starts, self.input_ends)

    def describe(self) -> str:
        start = "the beginning" if self.from_ms is None else format_timestamp_ms(self.from_ms)
        live = ", ".join(f"{len(keys):,} in {topic}" for topic, keys in self.live_before.items())
        return "\n".join(
            (
                f"replay of consumer group {self.group} from {start}:",
                f"  delete consumer group {self.group} and topics {', '.join(changelog_topics(self.group))}",
                f"  rebuild from {self.total:,} input records (raw webhooks from {start}, "
                "operator commands from the beginning)",
                f"  tombstone the keys the rebuild does not publish again (live now: {live})",
            )
        )


def plan_replay(admin: AdminClient, settings: Settings, from_ms: int | None) -> ReplayPlan:
    from mailstream.connectors.registry import PROVIDERS

    names = TopicNames(settings.topic_prefix)
    raw = partitions_of(admin, [names.raw(provider) for provider in PROVIDERS])
    commands = partitions_of(admin, [names.commands])
    events = partitions_of(admin, [names.events])
    published_topics = [names.recipient_state, names.suppressions]
    input_ends = list_offsets(admin, [*raw, *commands])
    raw_starts = beginning_offsets(admin, raw) if from_ms is None else list_offsets(admin, raw, from_ms)
    starts = {**raw_starts, **beginning_offsets(admin, commands), **list_offsets(admin, events)}
    return ReplayPlan(
        group=settings.app_id,
        from_ms=from_ms,
        starts=starts,
        input_ends=input_ends,
        published_ends=list_offsets(admin, partitions_of(admin, published_topics)),
        live_before={topic: live_keys(read_to_end(settings, topic)) for topic in published_topics},
    )


def replay(
    settings: Settings,
    from_ms: int | None,
    confirm: Callable[[str], bool],
    out: TextIO,
    worker_log: Path,
) -> int:
    """Rebuild the derived state (see the module docstring); returns the exit status."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.librdkafka_config())
    state, members = group_state(admin, settings.app_id)
    if members:
        raise ReplayError(
            f"consumer group {settings.app_id} has {members} member(s) ({state}): "
            "stop every worker before a replay"
        )
    plan = plan_replay(admin, settings, from_ms)
    if not confirm(plan.describe()):
        print("replay aborted: nothing changed", file=out)
        return 1
    reset(admin, settings, out)
    commit_offsets(admin, plan.group, plan.starts)
    started = time.monotonic()
    print(f"rebuilding with a worker (log: {worker_log})", file=out, flush=True)
    rebuild(admin, settings, plan, out, worker_log)
    elapsed = time.monotonic() - started
    tombstones, recipients = clean_up(settings, plan)
    print(format_summary(plan.total, elapsed, recipients, tombstones), file=out, flush=True)
    return 0


def reset(admin: AdminClient, settings: Settings, out: TextIO) -> None:
    delete_group(admin, settings.app_id)
    print(f"deleted consumer group {settings.app_id}", file=out)
    deleted = delete_topics(admin, changelog_topics(settings.app_id))
    print(f"deleted changelog topics: {', '.join(deleted) or 'none existed'}", file=out)
    table_data = settings.data_dir / settings.app_id
    if not settings.store.startswith("memory") and table_data.exists():
        shutil.rmtree(table_data)
        print(f"deleted local table data {table_data}", file=out)


def rebuild(
    admin: AdminClient, settings: Settings, plan: ReplayPlan, out: TextIO, worker_log: Path
) -> None:
    """Run a worker until it has consumed the inputs and the events they produced."""
    from mailstream.streams.operations.processes import service, settings_env

    names = TopicNames(settings.topic_prefix)
    printer = ProgressPrinter(out, out.isatty())
    env = settings_env(dataclasses.replace(settings, sweep_interval_seconds=0))
    started = time.monotonic()
    with service(["worker", "--without-web"], env, worker_log) as worker:

        def inputs(committed: Offsets) -> tuple[str, bool]:
            done = records_done(plan.starts, plan.input_ends, committed)
            line = format_progress("replayed", done, plan.total, time.monotonic() - started)
            return line, done >= plan.total

        _follow(admin, plan.group, worker, worker_log, inputs, printer)
        event_partitions = [p for p in plan.starts if p[0] == names.events]
        events_end = list_offsets(admin, event_partitions)
        events_total = records_between(plan.starts, events_end)

        def events(committed: Offsets) -> tuple[str, bool]:
            done = records_done(plan.starts, events_end, committed)
            line = format_progress("applied", done, events_total, time.monotonic() - started)
            return f"{line} (re-derived events)", done >= events_total

        _follow(admin, plan.group, worker, worker_log, events, printer)


def _follow(
    admin: AdminClient,
    group: str,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
    progress: Callable[[Offsets], tuple[str, bool]],
    printer: ProgressPrinter,
) -> None:
    """Show `progress` of the group's committed offsets until it says finished."""
    last_committed: Offsets | None = None
    last_change = time.monotonic()
    while True:
        if worker.poll() is not None:
            raise ReplayError(f"the worker exited with status {worker.returncode}:\n{_tail(worker_log)}")
        committed = committed_offsets(admin, group)
        line, finished = progress(committed)
        if finished:
            printer.finish(line)
            return
        printer.show(line)
        if committed != last_committed:
            last_committed, last_change = committed, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            raise ReplayError(f"no progress for {STALL_SECONDS:.0f} s:\n{_tail(worker_log)}")
        time.sleep(PROGRESS_EVERY_SECONDS)


def clean_up(settings: Settings, plan: ReplayPlan) -> tuple[int, int]:
    """Tombstone the stale keys of the published topics; (tombstones, recipients published)."""
    from confluent_kafka import Producer

    names = TopicNames(settings.topic_prefix)
    producer = Producer({**settings.kafka.librdkafka_config(), "enable.idempotence": True})
    tombstones = 0
    recipients = 0
    for topic, live_before in plan.live_before.items():
        written = read_to_end(settings, topic, plan.published_ends)
        if topic == names.recipient_state:
            recipients = len({record.key for record in written if record.value is not None})
        for key, partition in stale_keys(live_before, written).items():
            producer.produce(topic, key=key, value=None, partition=partition)
            tombstones += 1
    if producer.flush(30):
        raise ReplayError("tombstones not acknowledged within 30 s: run the replay again")
    return tombstones, recipients


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


# --- Command line --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="rebuild tables, recipient states and suppressions from the raw topics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        dest="from_ms",
        type=time_argument,
        metavar="TIME",
        help="replay raw records from TIME (ISO 8601, epoch ms, or 30m/2h/7d ago); "
        "default: the beginning",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--worker-log", type=Path, metavar="FILE", help="default: <data dir>/replay-worker.log"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not args.yes and not sys.stdin.isatty():
        print("mailstream replay: not a terminal: pass --yes to confirm", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker_log = args.worker_log or settings.data_dir / "replay-worker.log"
    confirm = _always if args.yes else _ask
    try:
        return replay(settings, args.from_ms, confirm, sys.stdout, worker_log)
    except (ReplayError, TimeoutError) as error:
        print(f"\nmailstream replay: {error}", file=sys.stderr)
        return 1


def _ask(plan: str) -> bool:
    print(plan)
    return input("Stop every worker first. Proceed? [y/N] ").strip().lower() in ("y", "yes")


def _always(plan: str) -> bool:
    print(plan)
    return True
