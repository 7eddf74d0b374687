"""Fixtures of the integration tier: the project's topics, the environment the CLI reads,
a running worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.registry import PROVIDERS
from mailstream.settings import Settings
from mailstream.topics import TopicNames, create_topics, topic_specs
from streams.processes import settings_env
from tests.integration.harness import running_worker


@pytest.fixture
def names(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> TopicNames:
    """Creates the topics of `settings`; in-process CLI calls (`mailstream.cli.main`) read the
    same settings from the environment."""
    create_topics(settings, topic_specs(settings, PROVIDERS))
    for name, value in settings_env(settings).items():
        if name.startswith("MAILSTREAM_"):
            monkeypatch.setenv(name, value)
    return TopicNames(settings.topic_prefix)


@pytest.fixture
def worker(settings: Settings, names: TopicNames, tmp_path: Path) -> Iterator[None]:
    """A `mailstream worker` for the test; it must still be alive when the test ends."""
    with running_worker(settings, tmp_path / "worker.log") as process:
        yield
        assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
