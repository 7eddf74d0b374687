"""Replay: how long `mailstream worker` takes to rebuild every recipient's state from the raw
topics, how much memory its tables take, and how long a restart takes to recover them; with
the in-memory table store and with RocksDB (`MAILSTREAM_STORE=rocksdb://`).

For each store, under a fresh prefix and app id:
1. idle: a worker on empty topics processes one record; its peak RSS is the baseline;
2. replay: --recipients recipients (one message each, so the message table holds as many
   entries as the recipient table) are produced to the raw topics, then a worker rebuilds their
   state from the beginning; events/s by record timestamps (as in e2e_bench), peak RSS (VmHWM);
3. restart: the worker is stopped and started again on the same app id and data directory,
   with one new record waiting: the seconds until that record's state is published measure the
   table recovery (memory: the whole changelog is read again; RocksDB: the local files are
   reopened, only changelog records past their offsets are read).
The time for --target-records (1,000,000) raw records is extrapolated from the replay rate
when --recipients makes fewer, and the table says so.

Run: .venv/bin/python bench/replay_bench.py [--recipients 100000] [--target-records 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    POLL_SECONDS,
    PipelineRun,
    bench_cluster,
    event_keys,
    fresh_settings,
    machine_line,
    markdown_table,
    measure,
    peak_rss_mib,
    produce,
    raw_records,
    running,
    worker,
)

from mailstream.connectors import mailbot
from mailstream.connectors.samples import Envelope, campaign
from mailstream.dev.provision import Cluster
from mailstream.settings import Settings
from mailstream.streams.reader import Watermarks
from mailstream.topics import TopicNames

STORES = ("memory://", "rocksdb://")
RESTART_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class StoreResult:
    store: str
    recipients: int
    records: int
    idle_rss_mib: float
    replay: PipelineRun
    restart_seconds: float | None  # None: no state within RESTART_TIMEOUT_SECONDS

    @property
    def mib_per_100k_recipients(self) -> float:
        return (self.replay.peak_rss_mib - self.idle_rss_mib) / self.recipients * 100_000


def probe(name: str) -> Envelope:
    payload = mailbot.sample_payload(
        "message.delivered", f"{name}@bench.example", f"{name}@bench", 1_700_000_000_000, name
    )
    return {"provider": "mailbot", "payload": payload}


def first_state_seconds(settings: Settings, log: Path, waiting: int) -> tuple[float | None, float]:
    """Start a worker with `waiting` states still to publish; (seconds from its start until they
    are published, or None if not within RESTART_TIMEOUT_SECONDS; its peak RSS then)."""
    names = TopicNames(settings.topic_prefix)
    watch = Watermarks(settings)
    try:
        expected = watch.total(names.recipient_state) + waiting
        started = time.monotonic()
        with worker(settings, log) as process:
            try:
                watch.wait_for(
                    names.recipient_state,
                    expected,
                    RESTART_TIMEOUT_SECONDS,
                    running(process),
                    POLL_SECONDS,
                )
            except TimeoutError:
                return None, peak_rss_mib(process.pid)
            return time.monotonic() - started, peak_rss_mib(process.pid)
    finally:
        watch.close()


def idle_rss(cluster: Cluster, store: str, work: Path) -> float:
    settings = fresh_settings(cluster, "idle", work / "idle", store=store)
    produce(settings, raw_records(TopicNames(settings.topic_prefix), [probe("idle")]))
    return first_state_seconds(settings, work / "idle.log", 1)[1]


def replay(cluster: Cluster, store: str, recipients: int, work: Path) -> StoreResult:
    work.mkdir(parents=True)
    settings = fresh_settings(cluster, "replay", work / "replay", store=store)
    names = TopicNames(settings.topic_prefix)
    records = raw_records(names, campaign(recipients, messages_per_recipient=1, seed=41))
    expected = sum(map(len, event_keys(names, records)))
    produce(settings, records)
    with worker(settings, work / "replay.log") as process:
        run = measure(store, settings, expected, process)
    produce(settings, raw_records(names, [probe("after-restart")]))
    restart_seconds, _ = first_state_seconds(settings, work / "restart.log", 1)
    return StoreResult(
        store, recipients, len(records), idle_rss(cluster, store, work), run, restart_seconds
    )


def report(results: list[StoreResult], target: int) -> None:
    rows = []
    for result in results:
        extrapolated = "" if result.records >= target else " (extrapolated)"
        rows.append(
            (
                result.store,
                result.records,
                result.recipients,
                result.replay.per_second,
                f"{target / result.replay.per_second / 60:.1f}{extrapolated}",
                result.replay.cpu_us_per_event,
                f"{result.idle_rss_mib:.0f}",
                f"{result.replay.peak_rss_mib:.0f}",
                f"{result.mib_per_100k_recipients:.0f}",
                f"{result.restart_seconds:.1f}"
                if result.restart_seconds is not None
                else f"none within {RESTART_TIMEOUT_SECONDS:.0f} s",
            )
        )
    print(
        markdown_table(
            [
                "store",
                "raw records",
                "recipients",
                "events/s",
                f"minutes for {target:,} records",
                "CPU µs/event",
                "idle RSS MiB",
                "peak RSS MiB",
                "MiB per 100k recipients",
                "restart to first state s",
            ],
            rows,
        )
    )
    print(
        "\nMiB per 100k recipients = (peak - idle RSS) scaled to 100,000 recipients; each "
        "recipient here has one message, so it holds one recipient and one message table entry "
        "(more messages "
        "per recipient: more message entries). Restart: stop, start on the same app id and data "
        "directory, seconds until a record waiting at start-up is processed."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--target-records", type=int, default=1_000_000)
    args = parser.parse_args()
    with bench_cluster() as cluster, tempfile.TemporaryDirectory(prefix="replay-") as scratch:
        print(machine_line(cluster) + "\n")
        results = [
            replay(cluster, store, args.recipients, Path(scratch) / store.rstrip(":/"))
            for store in STORES
        ]
    report(results, args.target_records)


if __name__ == "__main__":
    main()
