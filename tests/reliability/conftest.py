"""Fixtures of the reliability tests: topics, killable workers, and the chaos seed.

Set MAILSTREAM_CHAOS_SEED to replay a failing run: every test prints the seed it used, and
everything random in it (the generated stream, where and when it kills) derives from it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.registry import PROVIDERS
from mailstream.settings import Settings
from mailstream.topics import TopicNames, create_topics, topic_specs
from tests.reliability.helpers import Offsets, Workers, offsets_of


@pytest.fixture
def chaos_seed() -> int:
    seed = int(os.environ.get("MAILSTREAM_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed: {seed} (rerun with MAILSTREAM_CHAOS_SEED={seed})")
    return seed


@pytest.fixture
def names(settings: Settings) -> TopicNames:
    create_topics(settings, topic_specs(settings, PROVIDERS))
    return TopicNames(settings.topic_prefix)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def offsets(settings: Settings, names: TopicNames) -> Iterator[Offsets]:
    with offsets_of(settings) as progress:
        yield progress
