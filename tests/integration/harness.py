"""Helpers for tests that run the real pipeline."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mailstream.settings import Settings
from streams.processes import service, settings_env


@contextlib.contextmanager
def running_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with service(["worker", "--without-web", "--loglevel", "info"], settings_env(settings), log) as process:
        yield process
