"""End to end on the real broker: raw webhooks in, every recipient state out, and its peers.

1. Throughput. A generated campaign (all three providers, the event mix of `campaign()`,
   --records raw records over many recipients) is produced to the raw topics first, keyed by
   message id, under a fresh topic prefix; then the pipeline starts and runs until every
   resulting state is on email.recipient-state. events/s = events / (timestamp of the last
   state record - timestamp of the first canonical event), so start-up is not counted; CPU
   µs/event is the pipeline process's CPU time over the same stretch (steadier than the rate
   when other jobs share the machine). Pipelines, each on its own copy of the stream:
   - `mailstream worker` as shipped;
   - bench/batched_worker.py: the same worker with batched agents (`stream.take_events`);
   - bench/plain_loop.py: the same processors and tables in a plain confluent-kafka loop;
   - bench/quix_pipeline.py: the same processors on Quix Streams 3.28 (its consumer, producer,
     RocksDB state with changelogs, checkpoints), in its own venv bench/.venv-quix (Quix pins
     confluent-kafka < 2.13), created here on first use (`quix_python()`);
   - Kafka's ProducerPerformance and ConsumerPerformance on the same bodies: the broker.
2. Latency. A fresh worker and a new campaign (one message per recipient, so a recipient's
   records share a partition and its n-th raw record makes its n-th state), produced at a fixed
   rate below saturation (half the shipped worker's throughput unless --rate). Latency = state
   record timestamp - raw record CreateTime, both stamped on this machine's clock.

Run: .venv/bin/python bench/e2e_bench.py [--records 200000] [--latency-seconds 30] [--rate N]
     [--only NAME ...]  (the shipped worker and the plain loop always run: the ratios need them)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
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
    percentile,
    produce,
    raw_records,
    running,
    worker,
)

from mailstream.connectors import mailbot
from mailstream.connectors.samples import Envelope, RawRecord, campaign
from mailstream.dev.broker import ensure_jars
from mailstream.dev.provision import Cluster
from mailstream.streams.reader import Watermarks, read_to_end
from mailstream.streams.records import SourceRecord
from mailstream.topics import TopicNames, TopicSpec, create_topics

BENCH = Path(__file__).resolve().parent
MESSAGES_PER_RECIPIENT = 2
ENVELOPES_PER_MESSAGE = 1.74  # the average of campaign()
SHIPPED = "`mailstream worker` as shipped"
PLAIN = "plain confluent-kafka loop (bench/plain_loop.py)"
QUIX = "Quix Streams 3.28 (bench/quix_pipeline.py)"

# Quix Streams pins confluent-kafka < 2.13 (mailstream needs >= 2.16): its own venv, with
# mailstream installed editable without its dependencies, plus what the processors import.
QUIX_VENV = BENCH / ".venv-quix"
QUIX_REQUIREMENTS = (
    "quixstreams==3.28.*",
    "PyYAML>=6",
    "aiokafka>=0.14,<0.15",  # the murmur2 partitioner of mailstream.streams.records
    "cryptography>=42",
)


@dataclass(frozen=True)
class Pipeline:
    name: str
    command: tuple[str, ...] = ()  # a Python script and its arguments; () = `mailstream worker`
    env: tuple[tuple[str, str], ...] = ()
    peer: bool = False  # not Faust: a reference to compare the worker with
    quix: bool = False  # runs in the Quix venv


PROPOSED_STEPS = (("BENCH_BATCH", "500", "+ take_events(500, within=10 ms)"),)


def pipelines() -> list[Pipeline]:
    """The shipped worker, then the proposed changes cumulatively, then the peers: the plain
    loop and Quix Streams."""
    steps = [Pipeline(SHIPPED)]
    env: list[tuple[str, str]] = []
    for variable, value, label in PROPOSED_STEPS:
        env.append((variable, value))
        steps.append(
            Pipeline(f"batched_worker.py {label}", (str(BENCH / "batched_worker.py"),), tuple(env))
        )
    steps.append(Pipeline(PLAIN, (str(BENCH / "plain_loop.py"),), peer=True))
    steps.append(Pipeline(QUIX, (str(BENCH / "quix_pipeline.py"),), peer=True, quix=True))
    return steps


def quix_python() -> Path:
    """The Quix venv's interpreter, the venv made (or remade after pyproject.toml changed)."""
    python = QUIX_VENV / "bin" / "python"
    marker = QUIX_VENV / ".installed"
    project = BENCH.parent
    if marker.exists() and marker.stat().st_mtime >= (project / "pyproject.toml").stat().st_mtime:
        return python
    print(f"Creating {QUIX_VENV.relative_to(project)} (Quix Streams and its confluent-kafka)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *QUIX_REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", "--editable", str(project)], check=True)
    marker.touch()
    return python


@dataclass(frozen=True)
class Latency:
    name: str
    rate: float
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float


# --- Throughput -------------------------------------------------------------------------------


def run_pipeline(
    cluster: Cluster, pipeline: Pipeline, envelopes: Sequence[Envelope], work: Path
) -> PipelineRun:
    settings = fresh_settings(cluster, "e2e", work)
    names = TopicNames(settings.topic_prefix)
    records = raw_records(names, envelopes)
    expected = sum(map(len, event_keys(names, records)))
    produce(settings, records)
    python = quix_python() if pipeline.quix else None
    log = work / f"{Path(pipeline.command[0]).stem if pipeline.command else 'worker'}.log"
    with worker(settings, log, pipeline.command, dict(pipeline.env), python) as process:
        return measure(pipeline.name, settings, expected, process)


def kafka_tools(
    cluster: Cluster, records: Sequence[RawRecord], work: Path
) -> list[tuple[str, float]]:
    """(tool, records/s) of ProducerPerformance (acks=all) and ConsumerPerformance."""
    settings = fresh_settings(cluster, "perf", work)
    topic = f"{settings.topic_prefix}perf"
    create_topics(settings, [TopicSpec(topic, settings.partitions, 1)])
    payloads = work / "payloads.txt"
    payloads.write_bytes(b"\n".join(record.value or b"" for record in records))
    count = str(len(records))
    produced = _java(
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        count,
        "--throughput",
        "-1",
        "--payload-file",
        str(payloads),
        "--producer-props",
        f"bootstrap.servers={cluster.bootstrap_servers}",
        "acks=all",
        "linger.ms=5",
    )
    summary = re.search(r"\d+ records sent, ([\d.]+) records/sec", produced)
    if summary is None:
        raise RuntimeError(f"ProducerPerformance printed no summary:\n{produced}")
    consumed = _java(
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        cluster.bootstrap_servers,
        "--topic",
        topic,
        "--messages",
        count,
        "--timeout",
        "60000",
        "--hide-header",
    )
    # start, end, MB, MB/s, messages, messages/s, rebalance ms, fetch ms, fetch MB/s,
    # fetch messages/s
    fetch_rate = float(consumed.strip().splitlines()[-1].split(",")[9])
    return [
        ("Kafka ProducerPerformance (acks=all, same bodies)", float(summary[1])),
        ("Kafka ConsumerPerformance (same bodies, fetch time)", fetch_rate),
    ]


def _java(main_class: str, *arguments: str) -> str:
    classpath = f"{ensure_jars()}/*"
    result = subprocess.run(
        [
            "java",
            "-Xmx512m",
            "-Dlog4j.configuration=file:/dev/null",
            "-cp",
            classpath,
            main_class,
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout


# --- Latency ---------------------------------------------------------------------------------


def latency_at(
    cluster: Cluster, pipeline: Pipeline, rate: float, seconds: float, work: Path
) -> Latency:
    settings = fresh_settings(cluster, "latency", work)
    names = TopicNames(settings.topic_prefix)
    recipients = int(rate * seconds / ENVELOPES_PER_MESSAGE)
    records = raw_records(names, campaign(recipients, messages_per_recipient=1, seed=29))
    keys = event_keys(names, records)
    watch = Watermarks(settings)
    try:
        with worker(
            settings, work / "latency.log", pipeline.command, dict(pipeline.env)
        ) as process:
            produce(settings, raw_records(names, [_warm_up()]))
            watch.wait_for(names.recipient_state, 1, 120, running(process), POLL_SECONDS)
            stamps = produce(settings, records, rate)
            watch.wait_for(
                names.recipient_state, 1 + sum(map(len, keys)), 300, running(process), POLL_SECONDS
            )
    finally:
        watch.close()
    latencies = _pair(stamps, keys, read_to_end(settings, names.recipient_state))
    return Latency(
        pipeline.name,
        rate,
        len(records),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        max(latencies),
    )


def _warm_up() -> Envelope:
    """One record to wait for before the clock starts: the worker is then assigned and running."""
    payload = mailbot.sample_payload(
        "message.delivered", "warm-up@bench.example", "warm-up@bench", 1_700_000_000_000, "warm-up"
    )
    return {"provider": "mailbot", "payload": payload}


def _pair(
    stamps: Sequence[int], keys: Sequence[list[bytes]], states: Sequence[SourceRecord]
) -> list[float]:
    """Per recipient, its n-th raw record (in produce order) made its n-th state record."""
    produced: dict[bytes, list[int]] = defaultdict(list)
    for stamp, record_keys in zip(stamps, keys, strict=True):
        for key in record_keys:
            produced[key].append(stamp)
    published: dict[bytes, list[int]] = defaultdict(list)
    for state in states:
        if state.key in produced and state.key is not None and state.timestamp is not None:
            published[state.key].append(state.timestamp)
    latencies: list[float] = []
    for key, created in produced.items():
        if len(published[key]) != len(created):
            raise RuntimeError(f"{key!r}: {len(created)} events but {len(published[key])} states")
        latencies.extend(state - raw for raw, state in zip(created, published[key], strict=True))
    return latencies


# --- Report -----------------------------------------------------------------------------------


def best_proposed(
    candidates: Sequence[Pipeline], runs: Sequence[PipelineRun]
) -> tuple[Pipeline, PipelineRun] | None:
    """The fastest of the proposed variants (neither the shipped worker nor a peer), if any ran."""
    proposed = [
        (pipeline, run)
        for pipeline, run in zip(candidates[1:], runs[1:], strict=True)
        if not pipeline.peer
    ]
    return max(proposed, key=lambda pair: pair[1].per_second) if proposed else None


def report(
    candidates: Sequence[Pipeline],
    runs: list[PipelineRun],
    tools: list[tuple[str, float]],
    latencies: list[Latency],
) -> None:
    shipped = runs[0]
    plain = next(run for run in runs if run.name == PLAIN)
    best_pair = best_proposed(candidates, runs)
    best = best_pair[1] if best_pair is not None else None

    def versus_best(rate: float) -> object:
        return best.per_second / rate if best is not None else "-"

    rows: list[tuple[object, ...]] = [
        (
            run.name,
            run.events,
            run.per_second,
            run.cpu_us_per_event,
            run.cpu_us_per_event / plain.cpu_us_per_event,
            run.per_second / plain.per_second,
            f"{run.peak_rss_mib:.0f}",
            shipped.per_second / run.per_second,
            versus_best(run.per_second),
        )
        for run in runs
    ]
    rows.extend(
        (
            name,
            "-",
            rate,
            "-",
            "-",
            rate / plain.per_second,
            "-",
            shipped.per_second / rate,
            versus_best(rate),
        )
        for name, rate in tools
    )
    print(
        markdown_table(
            [
                "pipeline",
                "events",
                "events/s",
                "CPU µs/event",
                "CPU / plain loop's",
                "events/s / plain loop's",
                "peak RSS MiB",
                "shipped / this",
                "best proposed / this",
            ],
            rows,
        )
    )
    proposed = (
        f"Best proposed: {best.per_second:,.0f}/s, "
        f"{best.per_second / plain.per_second:.2f} of the plain loop. "
        if best is not None
        else "No proposed variant ran. "
    )
    print(
        "\nTargets: >= 10,000 events/s end to end; >= half the plain loop. "
        f"Shipped: {shipped.per_second:,.0f}/s, "
        f"{shipped.per_second / plain.per_second:.2f} of the plain loop. "
        f"{proposed}"
        "Each event is consumed and produced twice (raw -> email.events -> state) plus table "
        "changelog writes; the Kafka tools move each record once. CPU is the pipeline process's "
        "(all its threads; each pipeline is one process)."
    )
    print(
        "\nEnd-to-end latency (raw CreateTime -> state record timestamp) at a fixed offered rate:\n"
    )
    print(
        markdown_table(
            ["pipeline", "offered records/s", "records", "p50 ms", "p99 ms", "max ms"],
            [
                (lat.name, lat.rate, lat.records, lat.p50_ms, lat.p99_ms, lat.max_ms)
                for lat in latencies
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records", type=int, default=200_000, help="raw records, at least (default %(default)s)"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, help="offered raw records/s in the latency runs")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only the pipelines whose names contain one of these (case-insensitive); "
        "the shipped worker and the plain loop always run",
    )
    args = parser.parse_args()
    recipients = int(args.records / MESSAGES_PER_RECIPIENT / ENVELOPES_PER_MESSAGE) + 1
    envelopes = list(campaign(recipients, MESSAGES_PER_RECIPIENT, seed=17))
    candidates = [
        pipeline
        for pipeline in pipelines()
        if pipeline.name in (SHIPPED, PLAIN)
        or not args.only
        or any(name.lower() in pipeline.name.lower() for name in args.only)
    ]
    if any(pipeline.quix for pipeline in candidates):
        quix_python()  # before any clock starts: a first run installs the venv
    with bench_cluster() as cluster, tempfile.TemporaryDirectory(prefix="e2e-") as scratch:
        print(machine_line(cluster) + "\n")
        print(
            f"Stream: {len(envelopes):,} raw records, {recipients:,} recipients, "
            "all three providers.\n"
        )
        work = Path(scratch)
        runs = [run_pipeline(cluster, pipeline, envelopes, work) for pipeline in candidates]
        tools = kafka_tools(cluster, raw_records(TopicNames(), envelopes), work)
        rate = args.rate or round(runs[0].per_second / 2, -2)
        best = best_proposed(candidates, runs)
        latencies = [
            latency_at(cluster, pipeline, rate, args.latency_seconds, work)
            for pipeline in (candidates[0], *([best[0]] if best is not None else []))
        ]
        report(candidates, runs, tools, latencies)


if __name__ == "__main__":
    main()
