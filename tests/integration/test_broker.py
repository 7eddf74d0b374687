"""The real broker: a round trip through a created topic, and the fixture's choice."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from mailstream.dev.broker import LocalBroker
from mailstream.dev.provision import provision_cluster
from mailstream.settings import Settings
from mailstream.topics import create_topics, topic_specs

pytestmark = pytest.mark.kafka


def test_round_trip_through_a_created_topic(settings: Settings) -> None:
    specs = topic_specs(settings, ["mailbot"])
    assert all(create_topics(settings, specs).values())
    assert not any(create_topics(settings, specs).values()), "second create must be a no-op"
    topic = specs[0].name
    config = settings.kafka.librdkafka_config()
    producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
    sent = [
        (f"key-{i}".encode(), f'{{"n": {i}, "id": "{uuid.uuid4()}"}}'.encode()) for i in range(20)
    ]
    for key, value in sent:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {**config, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    received = []
    try:
        while len(received) < len(sent):
            message = consumer.poll(10)
            assert message is not None, f"timed out after {len(received)} records"
            assert message.error() is None, message.error()
            received.append((message.key(), message.value()))
    finally:
        consumer.close()
    assert sorted(received) == sorted(sent)


def test_created_topics_have_the_declared_partitions_and_configs(settings: Settings) -> None:
    specs = topic_specs(settings, ["maileroo"])
    create_topics(settings, specs)
    admin = AdminClient(settings.kafka.librdkafka_config())
    metadata = admin.list_topics(timeout=10).topics
    from confluent_kafka.admin import ConfigResource

    for spec in specs:
        assert len(metadata[spec.name].partitions) == spec.partitions
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
        described = admin.describe_configs([resource])[resource].result()
        for key, value in spec.configs.items():
            assert described[key].value == value, (spec.name, key)


def test_an_external_cluster_named_in_the_environment_wins(tmp_path: Path) -> None:
    with provision_cluster({"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9093"}, tmp_path) as cluster:
        assert cluster.kind == "external"
        assert cluster.bootstrap_servers == "kafka.example:9093"
    assert not any(tmp_path.iterdir()), "no local broker may be started"


def test_local_broker_stops_and_restarts_with_its_data(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker")
    bootstrap = broker.start()
    pid = broker.pid()
    assert pid is not None
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert admin.list_topics(timeout=10).brokers
    broker.stop()
    assert broker.pid() is None
    assert not Path(f"/proc/{pid}").exists(), "the broker process must be gone"
    assert broker.start() == bootstrap, "a restart keeps its port"
    broker.stop()
