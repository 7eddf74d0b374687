"""Shared fixtures: one real Kafka cluster for the whole test session (and one real schema
registry, started when a test first asks for it), per test its own settings and topics, and one
headless Chromium (tests/browser.py) for the browser tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.provision import Cluster, provision_cluster
from mailstream.dev.schema_registry import LocalRegistry
from mailstream.settings import KafkaSettings, Settings
from mailstream.streams.operations.processes import settings_env
from mailstream.topics import TopicNames, create_topics, topic_specs
from tests.browser import browser as browser  # the session's headless Chromium


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with provision_cluster(os.environ, tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: Cluster) -> str:
    return kafka_cluster.bootstrap_servers


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`SCHEMA_REGISTRY_URL` (a registry's Confluent-compatible API), or the local Apicurio
    registry (`mailstream registry`), built from Maven Central on first use."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        yield external
        return
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    try:
        yield registry.start()
    finally:
        registry.stop()


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


@pytest.fixture
def names(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> TopicNames:
    """Creates the topics of `settings`; in-process CLI calls (`mailstream.cli.main`) read the
    same settings from the environment."""
    create_topics(settings, topic_specs(settings, PROVIDERS))
    for name, value in settings_env(settings).items():
        if name.startswith("MAILSTREAM_"):
            monkeypatch.setenv(name, value)
    return TopicNames(settings.topic_prefix)
