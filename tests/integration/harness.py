"""Helpers for tests that run the real pipeline."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka import Producer

from connectors.registry import get_provider
from mailstream.settings import Settings
from mailstream.topics import TopicNames
from streams.processes import service, settings_env


@contextlib.contextmanager
def running_worker(
    settings: Settings, log: Path, web_port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    web = ["--web-port", str(web_port)] if web_port else ["--without-web"]
    with service(["worker", *web, "--loglevel", "info"], settings_env(settings), log) as process:
        yield process


def send_envelopes(settings: Settings, envelopes: list[dict]) -> None:
    """Produce webhook bodies as the ingest does: keyed by the provider's message id."""
    names = TopicNames(settings.topic_prefix)
    producer = Producer({**settings.kafka.librdkafka_config(), "enable.idempotence": True})
    for envelope in envelopes:
        payload = envelope["payload"]
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        key = get_provider(envelope["provider"]).message_key(body)
        producer.produce(names.raw(envelope["provider"]), value=body, key=key)
    assert producer.flush(30) == 0
