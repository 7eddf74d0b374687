"""The ingest's /metrics, scraped and parsed as Prometheus does (prometheus_client's parser):
the families and their types, the counts after known requests, one registry per service, and
the process metrics. Without a broker: Kafka writes go to a fake."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from mailstream.connectors.ingest.app import INGEST_SERVICE, create_app
from mailstream.connectors.ingest.metrics import IngestMetrics
from mailstream.connectors.ingest.producer import AsyncProducer, KafkaHeaders
from mailstream.connectors.registry import PROVIDERS
from mailstream.settings import IngestSettings, KafkaSettings, ProviderAuth, Settings

Client = TestClient[web.Request, web.Application]
SETTINGS = Settings(
    kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),  # nobody listens: writes are faked
    ingest=IngestSettings(
        providers={"maileroo": ProviderAuth(secrets=("maileroo-secret",))},
        produce_timeout_seconds=1.0,
    ),
)
INGEST_FAMILIES = {  # the parser's family names: a counter's without its _total
    "mailstream_ingest_requests": "counter",
    "mailstream_ingest_other_requests": "counter",
    "mailstream_ingest_duplicates": "counter",
    "mailstream_ingest_kafka_reachable": "gauge",
    "mailstream_ingest_stored_bytes": "counter",
    "mailstream_ingest_produce_in_flight": "gauge",
    "mailstream_ingest_produce_latency_seconds": "histogram",
}


def families(text: str) -> dict[str, str]:
    """Family name -> type, of an exposition."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly `labels` in an exposition, None if absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


async def metrics_text(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def fake_produce(
    _topic: str, _key: bytes | None, _value: bytes, _headers: KafkaHeaders
) -> None:
    """Kafka confirms at once."""


@pytest.fixture(autouse=True)
def no_outage_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listens on the configured port; these tests are not about outages."""
    monkeypatch.setattr(AsyncProducer, "_on_error", lambda _self, _error: None)


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    app = create_app(SETTINGS)
    monkeypatch.setattr(app[INGEST_SERVICE].producer, "produce", fake_produce)
    async with TestClient(TestServer(app)) as client:
        yield client


def signed(body: bytes) -> dict[str, str]:
    return PROVIDERS["maileroo"].sign(body, SETTINGS.ingest.auth("maileroo"), time.time())


async def test_a_scrape_has_the_families_and_the_counts_of_known_requests(client: Client) -> None:
    bodies = [b'{"event_type":"delivered","message_id":"ml-%d"}' % n for n in range(2)]
    for body in bodies:
        answer = await client.post("/webhooks/maileroo", data=body, headers=signed(body))
        assert answer.status == 200, await answer.text()
    replay = await client.post("/webhooks/maileroo", data=bodies[0], headers=signed(bodies[0]))
    assert (await replay.json())["status"] == "duplicate"
    assert (await client.post("/webhooks/maileroo", data=bodies[0])).status == 401
    assert (await client.post("/webhooks/nobody", data=b"{}")).status == 404
    assert (await client.get("/healthz")).status == 200

    response = await client.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = await response.text()
    found = families(text)
    assert {name: found.get(name) for name in INGEST_FAMILIES} == INGEST_FAMILIES

    def requests(provider: str, status: str) -> float | None:
        labels = {"provider": provider, "status": status}
        return sample(text, "mailstream_ingest_requests_total", **labels)

    assert requests("maileroo", "200") == 3, "two stored, one duplicate"
    assert requests("maileroo", "401") == 1
    assert requests("unknown", "404") == 1
    assert requests("nobody", "404") is None, "unknown providers share one label"
    assert sample(text, "mailstream_ingest_other_requests_total", status="200") == 1
    assert sample(text, "mailstream_ingest_duplicates_total", provider="maileroo") == 1
    stored = sample(text, "mailstream_ingest_stored_bytes_total", provider="maileroo")
    assert stored == sum(map(len, bodies))
    assert sample(text, "mailstream_ingest_stored_bytes_total", provider="mailbot") == 0, (
        "every provider's series exists from the start"
    )
    latency = "mailstream_ingest_produce_latency_seconds"
    assert sample(text, f"{latency}_count") == 2
    assert sample(text, f"{latency}_bucket", le="+Inf") == 2
    assert sample(text, "mailstream_ingest_produce_in_flight") == 0
    assert sample(text, "mailstream_ingest_kafka_reachable") == 1
    assert {"process_cpu_seconds", "process_start_time_seconds", "python_info"} <= set(found)
    resident = sample(text, "process_resident_memory_bytes")
    assert resident is not None and resident > 0


async def test_each_service_counts_in_a_registry_of_its_own(client: Client) -> None:
    assert (await client.post("/webhooks/nobody", data=b"{}")).status == 404
    async with TestClient(TestServer(create_app(SETTINGS))) as other:
        text = await metrics_text(other)
        assert (
            sample(text, "mailstream_ingest_requests_total", provider="unknown", status="404")
            is None
        )
        assert "process_cpu_seconds" in families(text), "both have the process metrics"
    text = await metrics_text(client)
    assert sample(text, "mailstream_ingest_requests_total", provider="unknown", status="404") == 1


def test_counters_and_a_cumulative_histogram() -> None:
    metrics = IngestMetrics(["mailbot"], kafka_reachable=lambda: True)
    metrics.count_request("mailbot", 200)
    metrics.count_request("mailbot", 200)
    metrics.count_request("unknown", 404)
    metrics.count_stored("mailbot", 120, 0.004)
    metrics.count_stored("mailbot", 80, 0.2)
    text = metrics.render().decode()
    requests = "mailstream_ingest_requests_total"
    assert sample(text, requests, provider="mailbot", status="200") == 2
    assert sample(text, requests, provider="unknown", status="404") == 1
    assert sample(text, "mailstream_ingest_stored_bytes_total", provider="mailbot") == 200
    latency = "mailstream_ingest_produce_latency_seconds"
    assert families(text)[latency] == "histogram"
    buckets = {"0.001": 0, "0.005": 1, "0.25": 2, "+Inf": 2}
    assert {le: sample(text, f"{latency}_bucket", le=le) for le in buckets} == buckets
    assert sample(text, f"{latency}_count") == 2
    assert sample(text, f"{latency}_sum") == pytest.approx(0.204)


def test_duplicates_other_paths_and_kafka_reachability_at_scrape_time() -> None:
    reachable = True
    metrics = IngestMetrics(["maileroo"], kafka_reachable=lambda: reachable)
    metrics.count_duplicate("maileroo")
    metrics.count_other_request(200)
    metrics.in_flight.inc()
    text = metrics.render().decode()
    assert sample(text, "mailstream_ingest_duplicates_total", provider="maileroo") == 1
    assert sample(text, "mailstream_ingest_other_requests_total", status="200") == 1
    assert sample(text, "mailstream_ingest_produce_in_flight") == 1
    assert sample(text, "mailstream_ingest_kafka_reachable") == 1
    reachable = False
    assert sample(metrics.render().decode(), "mailstream_ingest_kafka_reachable") == 0
