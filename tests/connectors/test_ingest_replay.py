"""Replayed signatures at the ingest: Mailgun signs a one-time token, not the body, so a
captured signature would verify on a forged event. Once a body with a token is stored, that
token on another body is refused 401; the same body again is the dedupe's duplicate; a failed
write leaves the token usable. Kafka writes go to a fake, as in test_ingest_hostile_input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailstream.connectors import mailgun
from mailstream.connectors.ingest.app import INGEST_SERVICE, IngestService, create_app
from mailstream.connectors.ingest.producer import ProduceError
from mailstream.connectors.registry import PROVIDERS
from mailstream.errors import ErrorKind
from mailstream.settings import IngestSettings, KafkaSettings, ProviderAuth, Settings
from tests.connectors.test_ingest_hostile_input import (
    FakeWrites,
    no_outage_detection,  # noqa: F401 - an autouse fixture, active once imported
    requests_counted,
)

Client = TestClient[web.Request, web.Application]
MAILGUN_AUTH = ProviderAuth(secrets=("mailgun-signing-key",), max_age_seconds=300)
SETTINGS = Settings(
    kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),  # nobody listens: writes are faked
    ingest=IngestSettings(
        providers={
            "mailgun": MAILGUN_AUTH,
            "maileroo": ProviderAuth(secrets=("maileroo-secret",)),
        },
        read_timeout_seconds=1.0,
        produce_timeout_seconds=1.0,
    ),
)
URL = "/webhooks/mailgun"


def event(name: str = "delivered", **fields: Any) -> bytes:
    data = {
        "event": name,
        "id": f"{name}-1",
        "timestamp": time.time(),
        "recipient": "lead@prospect.com",
        "message": {"headers": {"message-id": "m-1@mg.example.com"}},
        **fields,
    }
    return orjson.dumps({"event-data": data})


def signed(body: bytes) -> bytes:
    signed_body, headers = mailgun.PROVIDER.signed(body, MAILGUN_AUTH, time.time())
    assert headers == {}
    return signed_body


def with_signature_of(signed_body: bytes, other: bytes) -> bytes:
    """`other` under the signature captured from `signed_body`: what a replay would send."""
    signature = orjson.loads(signed_body)["signature"]
    return orjson.dumps({"signature": signature, **orjson.loads(other)})


async def serve(
    monkeypatch: pytest.MonkeyPatch, settings: Settings = SETTINGS
) -> tuple[Client, IngestService, FakeWrites]:
    app = create_app(settings, PROVIDERS)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    service = app[INGEST_SERVICE]
    writes = FakeWrites()
    monkeypatch.setattr(service.producer, "produce", writes.produce)
    return client, service, writes


@pytest.fixture
async def served(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Client, IngestService, FakeWrites]]:
    client, service, writes = await serve(monkeypatch)
    try:
        yield client, service, writes
    finally:
        await client.close()


async def post(client: Client, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    return response.status, await response.json()


async def test_a_captured_signature_on_another_body_is_refused(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, _, writes = served
    genuine = signed(event("delivered"))
    forged = with_signature_of(genuine, event("complained"))
    assert (await post(client, genuine))[1]["status"] == "stored"
    status, answer = await post(client, forged)
    assert status == 401
    assert answer["error"] == ErrorKind.INVALID_SIGNATURE
    assert "one-time token was already used" in answer["reason"]
    assert writes.values == [genuine]
    assert await requests_counted(client, "mailgun", 401) == 1


async def test_the_same_body_again_is_a_duplicate_not_a_refusal(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, _, writes = served
    body = signed(event())
    stored, again = [(await post(client, body))[1] for _ in range(2)]
    assert again == {"status": "duplicate", "request_id": stored["request_id"]}
    assert writes.values == [body]


async def test_a_failed_write_leaves_the_token_usable(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, _, writes = served
    writes.failures.append(ProduceError("_MSG_TIMED_OUT", "Local: Message timed out"))
    body = signed(event())
    assert (await post(client, body))[0] == 503
    assert (await post(client, body))[1]["status"] == "stored"
    assert (await post(client, with_signature_of(body, event("failed"))))[0] == 401
    assert writes.values == [body, body]


async def test_each_signed_request_has_its_own_token(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, service, writes = served
    bodies = [signed(event(name)) for name in ("delivered", "opened", "clicked")]
    assert [(await post(client, body))[1]["status"] for body in bodies] == ["stored"] * 3
    assert len(service.used_tokens["mailgun"]) == 3
    assert writes.values == bodies


async def test_another_body_with_a_token_being_written_is_refused(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, _, writes = served
    writes.before_ack = asyncio.Event()
    genuine = signed(event("delivered"))
    first = asyncio.ensure_future(post(client, genuine))
    deadline = time.monotonic() + 5
    while not writes.values:  # the first write is waiting for Kafka's acknowledgement
        assert time.monotonic() < deadline, "the first request did not arrive"
        await asyncio.sleep(0.01)
    status, _ = await post(client, with_signature_of(genuine, event("complained")))
    writes.before_ack.set()
    assert status == 401
    assert (await first)[1]["status"] == "stored"
    assert writes.values == [genuine]


async def test_tokens_are_kept_for_twice_the_freshness_window(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    _, service, _ = served
    tokens = service.used_tokens["mailgun"]
    assert tokens.window_seconds == 2 * MAILGUN_AUTH.max_age_seconds
    assert tokens.max_entries == SETTINGS.ingest.dedupe_max_entries


async def test_a_stale_signature_is_refused_before_any_token_is_looked_at(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, service, writes = served
    stale_at = time.time() - MAILGUN_AUTH.max_age_seconds - 5
    body, _ = mailgun.PROVIDER.signed(event(), MAILGUN_AUTH, stale_at)
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (401, ErrorKind.INVALID_SIGNATURE)
    assert "window" in answer["reason"]
    assert writes.values == []
    assert len(service.used_tokens["mailgun"]) == 0


async def test_with_the_dedupe_off_a_reused_token_is_refused_even_on_the_same_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = replace(SETTINGS, ingest=replace(SETTINGS.ingest, dedupe_window_seconds=0))
    client, _, writes = await serve(monkeypatch, settings)
    try:
        body = signed(event())
        assert (await post(client, body))[1]["status"] == "stored"
        assert (await post(client, body))[0] == 401
    finally:
        await client.close()
    assert writes.values == [body]


async def test_providers_that_sign_the_body_keep_no_tokens(
    served: tuple[Client, IngestService, FakeWrites],
) -> None:
    client, service, writes = served
    config = SETTINGS.ingest.auth("maileroo")
    for number in range(2):
        body = orjson.dumps({"event_type": "delivered", "message_id": f"ml-{number}"})
        headers = PROVIDERS["maileroo"].sign(body, config, time.time())
        response = await client.post("/webhooks/maileroo", data=body, headers=headers)
        assert response.status == 200
    assert len(writes.values) == 2
    assert all(len(tokens) == 0 for tokens in service.used_tokens.values())
