"""Fixtures of the reliability tests: killable workers, progress on topics, and the chaos seed.

Set MAILSTREAM_CHAOS_SEED to replay a failing run: every test prints the seed it used, and
everything random in it (the generated stream, where and when it kills) derives from it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstream.settings import Settings
from mailstream.streams.reader import Watermarks
from mailstream.topics import TopicNames
from tests.reliability.helpers import Workers


@pytest.fixture
def chaos_seed() -> int:
    seed = int(os.environ.get("MAILSTREAM_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed: {seed} (rerun with MAILSTREAM_CHAOS_SEED={seed})")
    return seed


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def offsets(settings: Settings, names: TopicNames) -> Iterator[Watermarks]:
    with Watermarks(settings) as watermarks:
        yield watermarks
