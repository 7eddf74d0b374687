"""Broker restart while `mailstream ingest` and the worker run, on a broker of its own: the
broker is stopped in the middle of a round of webhooks and started again on the same port with
its data. The ingest answers 503 while Kafka is away and the provider retries, as providers do;
nobody restarts the ingest or the worker: they recover by themselves, and the end state still
equals the offline twin's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest

from mailstream.connectors.registry import PROVIDERS
from mailstream.connectors.samples import Envelope, campaign_rounds
from mailstream.dev.broker import LocalBroker, free_port
from mailstream.settings import (
    IngestSettings,
    KafkaSettings,
    ProviderAuth,
    Settings,
)
from mailstream.streams.operations.processes import service, settings_env
from mailstream.text import log_tail
from mailstream.topics import create_topics, topic_specs
from tests.reliability.helpers import Workers, expected_states, wait_for_oracle

pytestmark = pytest.mark.kafka

RECIPIENTS = 100
SECRET = "reliability-secret"
PRODUCE_TIMEOUT_SECONDS = 2
PROVIDER_RETRY_SECONDS = 0.2  # how long a provider waits before it retries a refused webhook
REFUSALS = 3  # the broker stays away for that many produce timeouts, at least


class Provider:
    """Posts signed webhooks one after the other, retrying each until it is answered 200."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, settings: Settings) -> None:
        self._session = session
        self._base_url = base_url
        self._settings = settings
        self.stored = 0
        self.refused = 0

    async def deliver(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            await self._deliver(envelope["provider"], orjson.dumps(envelope["payload"]))

    async def _deliver(self, provider: str, body: bytes) -> None:
        config = self._settings.ingest.auth(provider)
        while True:
            headers = {
                "Content-Type": "application/json",
                **PROVIDERS[provider].sign(body, config, time.time()),
            }
            async with self._session.post(
                f"{self._base_url}/webhooks/{provider}", data=body, headers=headers
            ) as answer:
                if answer.status == 200:
                    self.stored += 1
                    return
                assert answer.status == 503, f"{answer.status}: {await answer.text()}"
            self.refused += 1
            await asyncio.sleep(PROVIDER_RETRY_SECONDS)

    async def ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with self._session.get(f"{self._base_url}/readyz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            assert time.monotonic() < deadline, f"the ingest was not ready within {timeout}s"
            await asyncio.sleep(0.1)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def outage(broker: LocalBroker, provider: Provider, after: int) -> None:
    """Stop the broker once `after` webhooks were stored; start it again once REFUSALS were
    refused."""
    await wait_for(lambda: provider.stored >= after, 60, f"{after} stored webhooks")
    await asyncio.to_thread(broker.stop)
    await wait_for(
        lambda: provider.refused >= REFUSALS, 60, f"{REFUSALS} webhooks refused while Kafka is down"
    )
    await asyncio.to_thread(broker.start)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    own = LocalBroker(tmp_path / "broker")
    try:
        own.start()
        yield own
    finally:
        own.stop()


def with_ingest_secrets(settings: Settings) -> Settings:
    auth = ProviderAuth(secrets=(SECRET,))
    ingest = IngestSettings(
        providers=dict.fromkeys(PROVIDERS, auth), produce_timeout_seconds=PRODUCE_TIMEOUT_SECONDS
    )
    return replace(settings, ingest=ingest)


def ingest_env(settings: Settings) -> dict[str, str]:
    return settings_env(settings) | {
        **{f"MAILSTREAM_INGEST_{name.upper()}_SECRETS": SECRET for name in PROVIDERS},
        "MAILSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS": str(PRODUCE_TIMEOUT_SECONDS),
    }


async def test_ingest_and_worker_recover_by_themselves_and_the_state_stays_exact(
    settings: Settings, broker: LocalBroker, workers: Workers, tmp_path: Path, chaos_seed: int
) -> None:
    settings = with_ingest_secrets(
        replace(settings, kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    )
    create_topics(settings, topic_specs(settings, PROVIDERS))
    first, second = campaign_rounds(RECIPIENTS, rounds=2, seed=chaos_seed)
    stop_after = random.Random(chaos_seed).randrange(len(second) // 4, len(second) * 3 // 4)
    print(f"the broker stops after {stop_after} of {len(second)} webhooks of round 2")
    port = free_port()
    arguments = ["ingest", "--port", str(port)]
    with service(arguments, ingest_env(settings), tmp_path / "ingest.log") as ingest:
        workers.start("worker", settings)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            provider = Provider(session, f"http://127.0.0.1:{port}", settings)
            await provider.ready(30)
            await provider.deliver(first)
            await asyncio.to_thread(
                wait_for_oracle, settings, expected_states(first), 90, "round 1"
            )
            stored_before = provider.stored
            await asyncio.gather(
                provider.deliver(second), outage(broker, provider, stored_before + stop_after)
            )

        def logs() -> str:
            return f"{workers.log_tails()}\n--- ingest:\n{log_tail(tmp_path / 'ingest.log')}"

        context = f"round 2 across the broker restart, chaos seed {chaos_seed}"
        await asyncio.to_thread(
            wait_for_oracle, settings, expected_states([*first, *second]), 120, context, logs
        )
        assert ingest.poll() is None, logs()
        workers.assert_alive("worker")
    print(f"{provider.refused} webhooks refused while the broker was away")
