"""Fixtures of the integration tier: a running worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstream.settings import Settings
from mailstream.topics import TopicNames
from tests.integration.harness import running_worker


@pytest.fixture
def worker(settings: Settings, names: TopicNames, tmp_path: Path) -> Iterator[None]:
    """A `mailstream worker` for the test; it must still be alive when the test ends."""
    with running_worker(settings, tmp_path / "worker.log") as process:
        yield
        assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
