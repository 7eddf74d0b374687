"""Topic names and specs: the one place that knows what the project's topics are.

Every topic is created explicitly (`mailstream topics create`), never by auto-creation, so
partition counts match across the topics Faust joins (a mismatch crashes its agents).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailstream.settings import Settings

FOREVER = "-1"
THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)


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
    def commands(self) -> str:
        return f"{self.prefix}email.commands"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, providers: Iterable[str]) -> list[TopicSpec]:
    """Raw topics keep everything (they are the source of truth for replays), and so do the
    dead letters and the operator commands (an audit trail); published state topics are
    compacted so a new subscriber reads the latest value per recipient. The commands topic
    has the partitions of email.events: the state agent reads both, keyed by recipient."""
    names = TopicNames(settings.topic_prefix)

    def spec(name: str, **configs: str) -> TopicSpec:
        return TopicSpec(name, settings.partitions, settings.replication_factor, configs)

    compacted = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
    return [
        *(spec(names.raw(provider), **{"retention.ms": FOREVER}) for provider in providers),
        spec(names.events, **{"retention.ms": THIRTY_DAYS_MS}),
        spec(names.dead_letters, **{"retention.ms": FOREVER}),
        spec(names.recipient_state, **compacted),
        spec(names.suppressions, **compacted),
        spec(names.commands, **{"retention.ms": FOREVER}),
    ]


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
    for name, future in (admin.create_topics(missing, request_timeout=30).items() if missing else ()):
        try:
            future.result()
            results[name] = True
        except KafkaException as error:
            if error.args[0].code() != error.args[0].TOPIC_ALREADY_EXISTS:
                raise
    return results
