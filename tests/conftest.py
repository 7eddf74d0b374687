"""Session-wide fixtures: one real Kafka cluster for the whole test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from mailstream.broker.provision import Cluster, provision_cluster
from mailstream.settings import KafkaSettings, Settings


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with provision_cluster(os.environ, tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: Cluster) -> str:
    return kafka_cluster.bootstrap_servers


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    """Settings for one test: its own topic prefix and app id, so tests never share topics.
    The inactivity sweep is off (generated streams are years old by wall clock); the tests
    that exercise it turn it on."""
    unique = uuid.uuid4().hex[:10]
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topic_prefix=f"t{unique}.",
        partitions=2,
        app_id=f"mailstream-test-{unique}",
        sweep_interval_seconds=0,
    )
