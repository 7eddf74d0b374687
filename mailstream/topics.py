"""Topic names and specs: the one place that knows what the project's topics are, and the
admin calls on them and on the worker's consumer group (`topics create`, replay).

Every topic is created explicitly (`mailstream topics create`), never by auto-creation, so
partition counts match across the topics Faust joins (a mismatch crashes its agents).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailstream.errors import ErrorKind, MailstreamError
from mailstream.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

Partition = tuple[str, int]  # (topic, partition)
Offsets = dict[Partition, int]

FOREVER = "-1"
THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)
COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
# The worker's Faust tables (streams/app.py); Faust names their changelogs after the app id.
TABLES = ("messages", "recipients", "deliverability")


def changelog_topics(app_id: str) -> list[str]:
    return [f"{app_id}-{table}-changelog" for table in TABLES]


@dataclass(frozen=True)
class TopicNames:
    prefix: str = ""

    def raw(self, provider: str) -> str:
        return f"{self.prefix}email.raw.{provider}"

    @property
    def events(self) -> str:
        return f"{self.prefix}email.events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}email.events.dlq"

    @property
    def recipient_state(self) -> str:
        return f"{self.prefix}email.recipient-state"

    @property
    def suppressions(self) -> str:
        return f"{self.prefix}email.suppressions"

    @property
    def scoped_suppressions(self) -> str:
        """Suppressions per scope: keyed by [recipient, tenant] (tenant null: global)."""
        return f"{self.prefix}email.suppressions.scoped"

    @property
    def erasures(self) -> str:
        """Erased addresses, keyed by their keyed hash (mailstream.erasure)."""
        return f"{self.prefix}email.erasures"

    @property
    def deliverability_buckets(self) -> str:
        """The state step's deliverability buckets (mailstream.deliverability), one partition."""
        return f"{self.prefix}email.deliverability.buckets"

    @property
    def deliverability(self) -> str:
        """Deliverability windows, keyed by [tenant, domain, provider, window]."""
        return f"{self.prefix}email.deliverability"

    @property
    def alerts(self) -> str:
        """Changes of a deliverability window's status."""
        return f"{self.prefix}email.alerts"

    @property
    def commands(self) -> str:
        return f"{self.prefix}email.commands"

    @property
    def redrives(self) -> str:
        """The ledger of `mailstream dlq redrive` (streams/operations/dead_letters.py)."""
        return f"{self.prefix}email.events.dlq.redrives"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, providers: Iterable[str]) -> list[TopicSpec]:
    """Raw topics keep everything by default (they are the source of truth for replays;
    `raw_retention_ms` bounds how long they keep erased addresses), and so do the dead
    letters and the operator commands (an audit trail); published state topics are
    compacted so a new subscriber reads the latest value per recipient. The commands topic
    has the partitions of email.events: the state agent reads both, keyed by recipient.
    Raw topics take the ingest's largest record (`IngestSettings.max_record_bytes`: the body
    limit plus key, headers and framing); the broker's default is 1 MiB + 12 bytes in all."""
    names = TopicNames(settings.topic_prefix)
    raw_configs = {
        "retention.ms": str(settings.raw_retention_ms),
        "max.message.bytes": str(settings.ingest.max_record_bytes),
    }

    def spec(name: str, **configs: str) -> TopicSpec:
        return TopicSpec(name, settings.partitions, settings.replication_factor, configs)

    return [
        *(spec(names.raw(provider), **raw_configs) for provider in providers),
        spec(names.events, **{"retention.ms": THIRTY_DAYS_MS}),
        spec(names.dead_letters, **{"retention.ms": FOREVER}),
        spec(names.recipient_state, **COMPACTED),
        spec(names.suppressions, **COMPACTED),
        spec(names.scoped_suppressions, **COMPACTED),
        spec(names.erasures, **COMPACTED),
        spec(names.commands, **{"retention.ms": FOREVER}),
        redrive_ledger_spec(settings),
        # One partition: one agent sums every partition's buckets (streams/deliverability.py).
        TopicSpec(names.deliverability_buckets, 1, settings.replication_factor, COMPACTED),
        spec(names.deliverability, **COMPACTED),
        spec(names.alerts, **{"retention.ms": FOREVER}),
    ]


def redrive_ledger_spec(settings: Settings) -> TopicSpec:
    """The redrive ledger: small, one partition, compacted to the latest redrive per dead letter."""
    return TopicSpec(
        TopicNames(settings.topic_prefix).redrives, 1, settings.replication_factor, COMPACTED
    )


def create_topics(settings: Settings, specs: Iterable[TopicSpec]) -> dict[str, bool]:
    """Create the topics that do not exist yet; returns name -> created (False: existed)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka.librdkafka_config())
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = list(specs)
    missing = [
        NewTopic(s.name, s.partitions, s.replication_factor, config=s.configs)
        for s in wanted
        if s.name not in existing
    ]
    results = {s.name: False for s in wanted}
    for name, future in admin.create_topics(missing, request_timeout=30).items() if missing else ():
        try:
            future.result()
            results[name] = True
        except KafkaException as error:
            if error.args[0].code() != error.args[0].TOPIC_ALREADY_EXISTS:
                raise
    return results


# --- Admin calls on topics and consumer groups ---------------------------------------------


class AdminError(MailstreamError):
    """A topic or consumer-group operation that cannot be done; the message says what to do."""

    default_kind = ErrorKind.ADMIN_FAILED


def partitions_of(admin: AdminClient, topics: Iterable[str]) -> list[Partition]:
    metadata = admin.list_topics(timeout=15).topics
    partitions: list[Partition] = []
    for topic in topics:
        if topic not in metadata:
            raise AdminError(f"topic {topic} does not exist: run `mailstream topics create`")
        partitions.extend((topic, number) for number in sorted(metadata[topic].partitions))
    return partitions


def list_offsets(
    admin: AdminClient, partitions: Iterable[Partition], at_ms: int | None = None
) -> Offsets:
    """The end offsets of `partitions`; with `at_ms`, the offset of the first record at or after
    that time (the end offset where there is none)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = list(partitions)
    if not wanted:
        return {}
    spec = OffsetSpec.latest() if at_ms is None else OffsetSpec.for_timestamp(at_ms)
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in wanted}, request_timeout=30
    )
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

    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[
        group
    ].result()
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or ()
        if tp.offset >= 0
    }


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
            raise AdminError(
                f"cannot delete consumer group {group}: {error.args[0].str()}"
            ) from None
    _wait(
        lambda: group_state(admin, group)[0] == "DEAD", timeout, f"consumer group {group} deleted"
    )


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
            raise AdminError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.2)
