"""What the reliability tests share: worker processes that can be killed and restarted, the
consumer group's assignment and commits, and the comparison of the published state with the
offline twin (`mailstream simulate`).

Workers run with a 6 s Kafka session timeout (the broker's minimum; Faust's default is 60 s):
after a SIGKILL the dead member leaves the group that much sooner, so a restarted or surviving
worker gets its partitions in seconds. Faust reads these settings from the environment.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from confluent_kafka import (
    Consumer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mailstream.codec import codec_for
from mailstream.connectors.registry import PROVIDERS
from mailstream.connectors.samples import Envelope, raw_record
from mailstream.policy import default_policy
from mailstream.recipient import RecipientState
from mailstream.settings import Settings
from mailstream.streams.operations.processes import kill, service, settings_env
from mailstream.streams.reader import Records, latest_by_key, read_to_end, read_until
from mailstream.streams.simulate import simulate
from mailstream.text import log_tail
from mailstream.topics import TopicNames

RECOVERY_NOISE = ("No event received for active tp", "Recovery has not flushed buffers")
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}
STATE_CODEC = codec_for("recipient_state")
DEAD_LETTER_CODEC = codec_for("dead_letter")
States = dict[str, dict]


# --- Worker processes -------------------------------------------------------------------------


class Workers:
    """`mailstream worker` processes by name (web off, own data directory each); every process
    started is stopped (SIGTERM, then SIGKILL) when the test ends."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._stack = contextlib.ExitStack()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, settings: Settings) -> subprocess.Popen[bytes]:
        own = replace(settings, data_dir=self._directory / name / "data")
        environment = settings_env(own) | FAST_FAILOVER
        arguments = ["worker", "--without-web", "--loglevel", "info"]
        process = self._stack.enter_context(service(arguments, environment, self.log(name)))
        self._processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would; the worker must have been running until then."""
        self.assert_alive(name)
        kill(self._processes[name])

    def assert_alive(self, name: str) -> None:
        assert self._processes[name].poll() is None, f"worker {name} died:\n{self.log_tail(name)}"

    def log(self, name: str) -> Path:
        (self._directory / name).mkdir(parents=True, exist_ok=True)
        return self._directory / name / "worker.log"

    def log_tail(self, name: str, lines: int = 60) -> str:
        return log_tail(self.log(name), lines)

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every worker's log, without Faust's periodic recovery warnings
        (they would fill the tail while a recovery hangs: the lines before it tell where)."""
        tails = []
        for name in self._processes:
            text = log_tail(self.log(name), 5000).splitlines()
            periodic = [line for line in text if any(noise in line for noise in RECOVERY_NOISE)]
            kept = [line for line in text if line not in periodic][-lines:]
            omitted = f"({len(periodic)} periodic recovery warnings omitted, the first: "
            note = [f"{omitted}{periodic[0]})"] if periodic else []
            tails.append("\n".join([f"--- worker {name}:", *kept, *note]))
        return "\n".join(tails)

    def close(self) -> None:
        self._stack.close()


# --- The consumer group -----------------------------------------------------------------------


def group_assignment(settings: Settings, timeout: float) -> dict[str, set[tuple[str, int]]]:
    """member id -> the (topic, partition)s it owns, as the group coordinator describes it.
    Raises TimeoutError when the coordinator does not answer within `timeout` seconds."""
    admin = AdminClient(settings.kafka.librdkafka_config())
    future = admin.describe_consumer_groups([settings.app_id])[settings.app_id]
    description = future.result(timeout=timeout)
    return {
        member.member_id: {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    }


def wait_for_members(
    settings: Settings, count: int, timeout: float, check: Callable[[], None]
) -> dict[str, set[tuple[str, int]]]:
    """Poll the group until `count` members each own partitions of the events topic."""
    events = TopicNames(settings.topic_prefix).events
    deadline = time.monotonic() + timeout
    while True:
        try:
            assignment = group_assignment(settings, timeout=5)
        except TimeoutError:  # on a new broker: the coordinator is creating its offsets topic
            assignment = {}
        owners = [m for m, tps in assignment.items() if any(topic == events for topic, _ in tps)]
        if len(assignment) == count and len(owners) == count:
            return assignment
        check()
        assert time.monotonic() < deadline, (
            f"group {settings.app_id}: {assignment} after {timeout}s"
        )
        time.sleep(0.2)


def wait_for_commits(settings: Settings, timeout: float, check: Callable[[], None]) -> None:
    """Poll until the group's committed offsets reach the end of every source partition: all
    that was read is committed, so a crash from now on must be recovered from the changelogs,
    not by reading the sources again from the start."""
    names = TopicNames(settings.topic_prefix)
    topics = [names.events, *(names.raw(provider) for provider in PROVIDERS)]
    config = {
        **settings.kafka.librdkafka_config(),
        "group.id": settings.app_id,
        "enable.auto.commit": False,
    }
    consumer = Consumer(config)  # never subscribes: reads the group's offsets without joining it
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in range(settings.partitions)
        ]
        deadline = time.monotonic() + timeout
        while True:
            ends = {
                (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in partitions
            }
            committed = consumer.committed(partitions, timeout=10)
            behind = {
                (tp.topic, tp.partition): (tp.offset, ends[tp.topic, tp.partition])
                for tp in committed
                if ends[tp.topic, tp.partition] > max(tp.offset, 0)
            }
            if not behind:
                return
            check()
            assert time.monotonic() < deadline, (
                f"not committed after {timeout}s (committed, end): {behind}"
            )
            time.sleep(0.2)
    finally:
        consumer.close()


# --- The oracle -------------------------------------------------------------------------------


def expected_states(envelopes: Sequence[Envelope]) -> States:
    """What `mailstream simulate` computes from `envelopes`: each recipient's published record."""
    return {
        recipient: state.to_record()
        for recipient, state in simulate(envelopes, default_policy()).items()
    }


def published_states(records: Records) -> States:
    """The latest record per recipient on email.recipient-state, decoded."""
    return {
        key.decode(): RecipientState.from_record(STATE_CODEC.decode(value)).to_record()
        for key, value in latest_by_key(records).items()
        if value is not None
    }


def wait_for_oracle(
    settings: Settings,
    expected: States,
    timeout: float,
    context: str,
    logs: Callable[[], str] = str,
) -> None:
    """Read email.recipient-state until its latest records equal `expected`; at the deadline,
    fail with what differs (and the `logs()` of the processes involved)."""
    topic = TopicNames(settings.topic_prefix).recipient_state
    try:
        read_until(settings, topic, lambda records: published_states(records) == expected, timeout)
    except TimeoutError:
        published = published_states(
            [(record.key, record.value) for record in read_to_end(settings, topic)]
        )
        raise AssertionError(f"{context}: {difference(published, expected)}\n{logs()}") from None


def difference(published: States, expected: States, shown: int = 3) -> str:
    missing = sorted(expected.keys() - published.keys())
    unexpected = sorted(published.keys() - expected.keys())
    differing = sorted(r for r in expected.keys() & published.keys() if expected[r] != published[r])
    summary = (
        f"{len(missing)} recipients missing {missing[:shown]}, {len(unexpected)} unexpected "
        f"{unexpected[:shown]}, {len(differing)} differ from the oracle"
    )
    lines = [summary]
    for recipient in differing[:shown]:
        fields = {
            name: (published[recipient].get(name), value)
            for name, value in expected[recipient].items()
            if published[recipient].get(name) != value
        }
        lines.append(f"  {recipient}: (published, expected) {fields}")
    return "\n".join(lines)


# --- Streams ----------------------------------------------------------------------------------


def late_deliveries(
    envelopes: Sequence[Envelope], rng: random.Random, share: float = 0.2
) -> list[Envelope]:
    """`envelopes` with the first event of a `share` of the messages (its delivery, which names
    the recipient) moved behind the message's other events: opens and clicks that name no
    recipient then wait in the message table until it arrives, and are released by it."""
    messages: dict[tuple[str, bytes | None], list[Envelope]] = {}
    for envelope in envelopes:
        record = raw_record(TopicNames(), envelope)
        messages.setdefault((record.topic, record.key), []).append(envelope)
    arranged: list[Envelope] = []
    for events in messages.values():
        if len(events) > 1 and rng.random() < share:
            events = [*events[1:], events[0]]
        arranged.extend(events)
    return arranged
