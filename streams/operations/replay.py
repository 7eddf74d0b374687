"""`mailstream replay [--from TIME] [--yes]`: rebuild all derived state from the raw topics.

Derived state is everything the worker computes: the Faust tables `messages`, `recipients`
and `deliverability` (with their changelog topics), `email.recipient-state`,
`email.suppressions`, `email.suppressions.scoped`, `email.deliverability.buckets` and
`email.deliverability` (the rebuild's worker tombstones the windows its rebuilt table does
not hold when it starts, and publishes the others as it sums them). `email.alerts` is an
audit trail: the rebuild may add to it. Its inputs
are the raw topics and `email.commands` (operator decisions), both kept forever; replay reads
them and never writes them.

Erasures (`mailstream erase`) survive a replay: replay never tombstones, resets or deletes
`email.erasures`, and its worker loads the erased hashes from it before processing anything,
so every event of an erased address is dropped again (and its ERASE command, replayed with
the other commands, republishes the same tombstones). Without MAILSTREAM_ERASURE_KEY the
erased addresses could not be recognized: replay refuses to start while email.erasures holds
a record.

The procedure. The operator stops every worker first; replay refuses to start while the
consumer group (`settings.app_id`) has members.

1. Capture: the end offsets of the inputs (the work to do) and of email.events, and the keys
   the two published topics hold now.
2. Reset: delete the consumer group and the tables' changelog topics
   (`<app_id>-<table>-changelog`), and wait until the broker no longer knows them. With
   an on-disk store (rocksdb://) this host's table data under `data_dir/<app_id>` goes too;
   other hosts running workers must delete theirs before starting again.
3. Position: commit the group's starting offsets: raw topics at the beginning, or at the
   first record at or after --from (`offsets_for_times`); email.commands at the beginning
   (always: a manual suppression older than --from must survive it); email.events and
   email.deliverability.buckets at their current end, so what was derived before the replay
   is not applied a second time.
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
- Order: a recipient's state is the fold of the rules over its events in event-time order
  (occurred_at, then received_at, then event id), operator commands in their place by
  requested_at (`mailstream/timeline.py`), not over the order the rebuild reads them in. That
  order differs from live processing: the commands are all there at once before the events
  are re-derived, and Faust reads its partitions round-robin, not by time (the messages of
  one recipient sit on different partitions, keyed by message id; a message's own events keep
  their order). A replay publishes the state live processing published all the same: a lift
  issued after an event-caused suppression stays lifted (it need not be issued again), and a
  delivery between soft bounces or the first cause of a suppression count where they fall in
  event time.
- The reorder window (policy.yaml): each recipient keeps its most recent events, at most
  `reorder_window_events` (64) spanning at most `reorder_window_hours` (168) of event time.
  An event read inside that window is put in its place and the state folded again; one older
  than the window is applied as it is read and counted in the state's `late_events` (0 means
  the state is exactly the event-time fold). See the README's ordering section.
- The rebuild runs the current code and policy: that is the point after a fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mailstream.errors import ErrorKind, MailstreamError, TimeFormatError
from mailstream.events import format_timestamp_ms
from mailstream.settings import Settings
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.reader import live_keys, read_to_end
from mailstream.streams.records import SourceRecord
from mailstream.text import log_tail
from mailstream.times import parse_instant_ms
from mailstream.topics import (
    Offsets,
    Partition,
    TopicNames,
    beginning_offsets,
    changelog_topics,
    commit_offsets,
    committed_offsets,
    delete_group,
    delete_topics,
    group_state,
    list_offsets,
    partitions_of,
)

if TYPE_CHECKING:
    import subprocess

    from confluent_kafka.admin import AdminClient


STALL_SECONDS = 300.0
PROGRESS_EVERY_SECONDS = 1.0
PLAIN_PROGRESS_EVERY_SECONDS = 5.0


class ReplayError(MailstreamError, RuntimeError):
    """Replay cannot go on; the message says why and what to do."""

    default_kind = ErrorKind.REPLAY_FAILED


# --- Pure parts --------------------------------------------------------------------------


def time_argument(text: str) -> int:
    """`parse_instant_ms` (durations ago included) as an argparse type: a malformed time exits
    2 with the reason."""
    try:
        return parse_instant_ms(text, int(time.time() * 1000))
    except TimeFormatError as error:
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
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(label: str, done: int, total: int, elapsed: float) -> str:
    """e.g. `replayed 1,234 of 5,000 records (24.7%), 410 records/s, ETA 0:09`."""
    percent = 100.0 if total == 0 else 100.0 * done / total
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = format_duration((total - done) / rate) if rate > 0 else "?"
    return (
        f"{label} {done:,} of {total:,} records ({percent:.1f}%), {rate:,.0f} records/s, ETA {eta}"
    )


def format_summary(records: int, elapsed: float, recipients: int, tombstones: int) -> str:
    rate = records / elapsed if elapsed > 0 else 0.0
    return (
        f"replay done: {records:,} records replayed in {format_duration(elapsed)} "
        f"({rate:,.0f} records/s); {recipients:,} recipients published, "
        f"{tombstones:,} stale keys tombstoned"
    )


def stale_keys(
    live_before: Mapping[bytes, int], written: Iterable[SourceRecord]
) -> dict[bytes, int]:
    """The keys live before the rebuild that it did not write: they need a tombstone."""
    rewritten = {record.key for record in written}
    return {key: partition for key, partition in live_before.items() if key not in rewritten}


class ProgressPrinter:
    """One updating line on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self._out = out
        self._interactive = interactive
        self._last_plain = float("-inf")
        self._line_open = False

    def show(self, line: str) -> None:
        if self._interactive:
            self._out.write(f"\r\x1b[K{line}")
            self._out.flush()
            self._line_open = True
        elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_EVERY_SECONDS:
            self._last_plain = time.monotonic()
            print(line, file=self._out, flush=True)

    def finish(self, line: str) -> None:
        prefix = "\r\x1b[K" if self._interactive else ""
        print(f"{prefix}{line}", file=self._out, flush=True)
        self._last_plain = float("-inf")
        self._line_open = False

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *_: object) -> None:
        """Ends an updating line left open (by a failure), so what follows starts a line."""
        if self._line_open:
            print(file=self._out, flush=True)
            self._line_open = False


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
                f"  delete consumer group {self.group} and topics "
                f"{', '.join(changelog_topics(self.group))}",
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
    buckets = partitions_of(admin, [names.deliverability_buckets])
    published_topics = [names.recipient_state, names.suppressions, names.scoped_suppressions]
    input_ends = list_offsets(admin, [*raw, *commands])
    raw_starts = (
        beginning_offsets(admin, raw) if from_ms is None else list_offsets(admin, raw, from_ms)
    )
    starts = {
        **raw_starts,
        **beginning_offsets(admin, commands),
        **list_offsets(admin, [*events, *buckets]),
    }
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
    check_erasures_known(settings)
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


def check_erasures_known(settings: Settings) -> None:
    """ErasureKeyMissing when email.erasures holds an erasure and no erasure key is set, and
    ErasureKeyMismatch when the key is not the one that hashed them: the rebuild could not
    recognize the erased addresses and would bring them back."""
    follower = ErasedAddresses(settings.erasure_key).load(settings)
    if follower is not None:
        follower.close()


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
    """Run a worker until it has consumed the inputs, the events they produced and the
    deliverability buckets those filled."""
    from mailstream.streams.operations.processes import service, settings_env

    names = TopicNames(settings.topic_prefix)
    env = settings_env(dataclasses.replace(settings, sweep_interval_seconds=0))
    started = time.monotonic()
    with (
        ProgressPrinter(out, out.isatty()) as printer,
        service(["worker", "--without-web"], env, worker_log) as worker,
    ):
        follow = partial(_follow, admin, plan.group, worker, worker_log, printer=printer)
        follow(_progress(plan, plan.input_ends, "replayed", "", started))
        # then what the rebuild derived: the events it re-normalized, the buckets they filled
        for topic, label, note in (
            (names.events, "applied", " (re-derived events)"),
            (names.deliverability_buckets, "summed", " (deliverability buckets)"),
        ):
            end = list_offsets(admin, [p for p in plan.starts if p[0] == topic])
            follow(_progress(plan, end, label, note, started))


def _progress(
    plan: ReplayPlan, end: Offsets, label: str, note: str, started: float
) -> Callable[[Offsets], tuple[str, bool]]:
    """The progress line of the group's consumption from the plan's starts to `end`, and
    whether it got there."""
    total = records_between(plan.starts, end)

    def progress(committed: Offsets) -> tuple[str, bool]:
        done = records_done(plan.starts, end, committed)
        line = format_progress(label, done, total, time.monotonic() - started)
        return f"{line}{note}", done >= total

    return progress


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
            raise ReplayError(
                f"the worker exited with status {worker.returncode}:\n{log_tail(worker_log)}"
            )
        committed = committed_offsets(admin, group)
        line, finished = progress(committed)
        if finished:
            printer.finish(line)
            return
        printer.show(line)
        if committed != last_committed:
            last_committed, last_change = committed, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            raise ReplayError(f"no progress for {STALL_SECONDS:.0f} s:\n{log_tail(worker_log)}")
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


# --- Command line --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    from mailstream.streams.operations.confirmation import confirmation

    settings = Settings.from_env()
    confirm = confirmation("replay", args.yes, "Stop every worker first. Proceed?")
    if confirm is None:
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker_log = args.worker_log or settings.data_dir / "replay-worker.log"
    # a failure is reported by mailstream.cli.main, like every command's
    return replay(settings, args.from_ms, confirm, sys.stdout, worker_log)
