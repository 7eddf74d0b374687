"""What the pipeline benchmarks share: a cluster, fresh topics, a generated raw stream, a worker
process, reading results back by record timestamp, and the markdown they print.

Every benchmark runs against `provision_cluster` (KAFKA_BOOTSTRAP_SERVERS if set, else a
dedicated local jar broker in a temporary directory) under a fresh topic prefix and app id, so
runs never see each other's records.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, TopicPartition

from mailstream.connectors.registry import PROVIDERS
from mailstream.connectors.samples import Envelope, RawRecord, raw_record
from mailstream.dev.broker import KAFKA_VERSION
from mailstream.dev.provision import Cluster, provision_cluster
from mailstream.policy import default_policy
from mailstream.settings import KafkaSettings, Settings
from mailstream.streams.operations.processes import service, settings_env, stop
from mailstream.streams.processors import build_processors
from mailstream.streams.reader import Watermarks, throwaway_consumer
from mailstream.streams.records import SourceRecord
from mailstream.topics import TopicNames, create_topics, topic_specs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- Machine and output -----------------------------------------------------------------------


def machine_line(cluster: Cluster) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"Machine: {os.cpu_count()} cores (nproc), {cpu}, {memory_kib / 2**20:.0f} GiB memory; "
        f"Python {platform.python_version()}, {_broker(cluster)}. "
        "Other jobs share this machine: figures are noisy."
    )


def _broker(cluster: Cluster) -> str:
    if cluster.local is None:
        where = "a testcontainers container" if cluster.kind == "testcontainers" else "outside"
        return f"Kafka at {cluster.bootstrap_servers} ({where})"
    in_memory = cluster.local.directory.is_relative_to(MEMORY_DIRECTORY)
    storage = "its log in memory (tmpfs)" if in_memory else "its log on disk"
    return f"Kafka {KAFKA_VERSION} (one local KRaft node, {storage})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- Cluster, settings, topics ----------------------------------------------------------------


MEMORY_DIRECTORY = Path("/dev/shm")  # noqa: S108 - holds a private mkdtemp directory
MEMORY_NEEDED = 8 * 2**30  # the largest benchmark run keeps a few GiB of topics


def broker_in_memory() -> bool:
    """The local broker keeps its log on tmpfs when there is room. On this machine's disk its
    first writes to a run's new topics held produce requests for up to 0.7 s, and every
    pipeline's latency, the plain loop's too, counted that wait; the benchmarks measure the
    pipelines, not the disk."""
    return (
        MEMORY_DIRECTORY.is_dir()
        and os.access(MEMORY_DIRECTORY, os.W_OK)
        and shutil.disk_usage(MEMORY_DIRECTORY).free >= MEMORY_NEEDED
    )


@contextlib.contextmanager
def bench_cluster() -> Iterator[Cluster]:
    parent = MEMORY_DIRECTORY if broker_in_memory() else None
    with contextlib.ExitStack() as stack:
        directory = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="mailstream-bench-", dir=parent))
        )
        yield stack.enter_context(provision_cluster(os.environ, directory / "broker"))


def fresh_settings(
    cluster: Cluster, label: str, data_dir: Path, *, partitions: int = 4, store: str = "memory://"
) -> Settings:
    """Settings of one benchmark run with its own topic prefix, app id and data directory;
    the topics are created here (the worker would create them too, but records are produced
    before it starts)."""
    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        topic_prefix=f"bench-{label}-{unique}.",
        partitions=partitions,
        app_id=f"bench-{label}-{unique}",
        store=store,
        data_dir=data_dir,
        sweep_interval_seconds=0,  # the generated stream is years old by wall clock
    )
    create_topics(settings, topic_specs(settings, PROVIDERS))
    return settings


def client_config(settings: Settings, **extra: object) -> dict[str, object]:
    return {**settings.kafka.librdkafka_config(), "log_level": 0, **extra}


# --- The raw stream -------------------------------------------------------------------------


def raw_records(names: TopicNames, envelopes: Iterable[Envelope]) -> list[RawRecord]:
    return [raw_record(names, envelope) for envelope in envelopes]


def event_keys(names: TopicNames, records: Sequence[RawRecord]) -> list[list[bytes]]:
    """The recipients (email.events keys) of the canonical events each raw record makes,
    computed offline with the pipeline's own Normalizer. Each event becomes one record on
    email.recipient-state."""
    normalizer = build_processors(Settings(topic_prefix=names.prefix), default_policy()).normalizer
    table: dict[bytes, dict[str, Any]] = {}
    keys = []
    for offset, record in enumerate(records):
        source = SourceRecord(record.topic, 0, offset, None, record.key, record.value)
        outputs = normalizer.process(source, table)
        keys.append(
            [out.key for out in outputs if out.topic == names.events and out.key is not None]
        )
    return keys


def produce(
    settings: Settings, records: Sequence[RawRecord], rate: float | None = None
) -> list[int]:
    """Produce `records` in order (as fast as possible, or paced at `rate` records/s); returns
    each record's CreateTime (epoch ms) as librdkafka stamped it."""
    producer = Producer(
        client_config(
            settings,
            **{
                "linger.ms": 5,
                "compression.type": "lz4",
                "acks": "all",
                "queue.buffering.max.messages": 500_000,
            },
        )
    )
    # Connected, with the topics' leaders known, before the first stamp: a record that waits
    # for the client's start-up would count that wait as the pipeline's latency.
    for topic in sorted({record.topic for record in records}):
        producer.list_topics(topic, timeout=30)
    stamps = [0] * len(records)
    started = time.monotonic()
    for index, record in enumerate(records):
        if rate is not None and index % 50 == 0:
            _pace(started, index, rate)
        stamps[index] = int(time.time() * 1000)
        while True:
            try:
                producer.produce(record.topic, record.value, record.key, timestamp=stamps[index])
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the producer could not deliver every raw record")
    return stamps


def _pace(started: float, sent: int, rate: float) -> None:
    due = started + sent / rate
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# --- Watching topics ------------------------------------------------------------------------


POLL_SECONDS = 0.2  # how often the benchmarks look at the output topics


def running(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    """A check for `Watermarks.wait_for`: fails as soon as `process` has died."""

    def check() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"the process under test died (exit code {process.returncode})")

    return check


def edge_timestamp(settings: Settings, topic: str, *, last: bool) -> int:
    """The earliest first (or the latest last) record timestamp over the partitions of `topic`."""
    consumer = throwaway_consumer(settings, "edge", log_level=0)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        consumer.assign(
            [
                TopicPartition(topic, p, high - 1 if last else low)
                for p, (low, high) in marks.items()
                if high > low
            ]
        )
        stamps: list[int] = []
        while len(stamps) < len(consumer.assignment()):
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                stamps.append(message.timestamp()[1] or 0)
        return max(stamps) if last else min(stamps)
    finally:
        consumer.close()


# --- Processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        / 1024
    )


@dataclass(frozen=True)
class PipelineRun:
    """One pipeline run over a pre-produced raw stream."""

    name: str
    events: int
    seconds: float  # first record on email.events -> last record on email.recipient-state
    cpu_seconds: float  # of the pipeline process over the same stretch
    peak_rss_mib: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6


def measure(
    name: str,
    settings: Settings,
    expected: int,
    process: subprocess.Popen[bytes],
    timeout: float = 900,
) -> PipelineRun:
    """Wait until `process` turned the raw stream into `expected` states; time it by the record
    timestamps, and read the process's CPU time from its first output to its last."""
    names = TopicNames(settings.topic_prefix)
    watch = Watermarks(settings)
    try:
        watch.wait_for(names.events, 1, timeout, running(process), POLL_SECONDS)
        cpu_at_start = cpu_seconds(process.pid)
        watch.wait_for(names.recipient_state, expected, timeout, running(process), POLL_SECONDS)
        cpu = cpu_seconds(process.pid) - cpu_at_start
        peak = peak_rss_mib(process.pid)
    finally:
        watch.close()
    first = edge_timestamp(settings, names.events, last=False)
    last = edge_timestamp(settings, names.recipient_state, last=True)
    return PipelineRun(name, expected, (last - first) / 1000, cpu, peak)


@contextlib.contextmanager
def worker(
    settings: Settings,
    log: Path,
    command: Sequence[str] = (),
    env: dict[str, str] | None = None,
    python: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`mailstream worker` (web off) for `settings`, or `command` (a Python script and its
    arguments, run by `python`, this interpreter by default) with the worker's environment;
    stopped on exit."""
    environment = settings_env(settings) | (env or {})
    if command:
        with script(command, environment, log, python) as process:
            yield process
        return
    with service(["worker", "--without-web", "--loglevel", "warning"], environment, log) as process:
        yield process


@contextlib.contextmanager
def script(
    command: Sequence[str], env: dict[str, str], log: Path, python: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python COMMAND...` (this interpreter unless `python`) in its own process group, output
    to `log`; stopped on exit."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [str(python or sys.executable), *command],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)
