"""Adding a provider is one module and one registry line (connectors/ADDING.md): a throwaway
provider, written here as a module file and added to the registry's mapping, is configured
from its own MAILSTREAM_INGEST_<NAME>_* variables and served by the ingest, with no other
change to the project."""

from __future__ import annotations

import importlib.util
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailstream.connectors.ingest.app import create_app
from mailstream.connectors.registry import PROVIDERS
from mailstream.settings import Settings
from mailstream.streams.operations.processes import settings_env
from mailstream.topics import TopicNames, create_topics, topic_specs
from tests.integration.test_ingest import headers_of, read_topic

pytestmark = pytest.mark.kafka

THROWAWAY_MODULE = '''
"""Acme Mail (a provider that exists only in this test): one JSON object per webhook,
hex HMAC-SHA256 of the body in X-Acme-Signature."""

from collections.abc import Mapping
from typing import Any

from mailstream.connectors.base import (
    Item, Sample, WebhookProvider, clean_address, clean_message_id, epoch_ms,
    first_secret, get_str, hmac_hex, hmac_matches, presented_credential,
)
from mailstream.errors import SignatureError
from mailstream.events import EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "acme"
SIGNATURE_HEADER = "X-Acme-Signature"
EVENT_TYPES = {"delivered": EventType.DELIVERED, "opened": EventType.OPENED}


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    return [new_event(
        event_id=get_str(item, "id"),
        provider=NAME,
        event_type=EVENT_TYPES.get(get_str(item, "type") or "", EventType.UNKNOWN),
        recipient=clean_address(get_str(item, "to")),
        message_id=message_id_of(item),
        occurred_at=epoch_ms(item.get("at"), "at"),
        received_at=received_at,
    )]


def message_id_of(item: Item) -> str | None:
    return clean_message_id(get_str(item, "message"))


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    header = config.signature_header or SIGNATURE_HEADER
    signature = presented_credential(headers, header, config, bool(config.secrets), NAME)
    if signature is not None and not hmac_matches(signature, body, config.secrets):
        raise SignatureError(f"{header} does not match")


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    return {SIGNATURE_HEADER: hmac_hex(first_secret(config, NAME), body)}


def sample(event: Sample) -> dict[str, Any] | None:
    return None


PROVIDER = WebhookProvider(NAME, normalize, verify, sign, message_id_of, sample)
'''
BODY = (
    b'{"id": "a-1", "type": "delivered", "to": "Ann@Example.com", "message": "<m-1@acme>",'
    b' "at": 1795000000}'
)


def throwaway_module(directory: Path) -> ModuleType:
    path = directory / "acme.py"
    path.write_text(textwrap.dedent(THROWAWAY_MODULE))
    spec = importlib.util.spec_from_file_location("acme", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_provider_added_by_one_module_and_one_registry_line_is_served(
    settings: Settings, tmp_path: Path
) -> None:
    acme = throwaway_module(tmp_path)
    providers = {**PROVIDERS, acme.NAME: acme.PROVIDER}  # the registry line
    env = settings_env(settings, {}) | {"MAILSTREAM_INGEST_ACME_SECRETS": "acme-secret"}
    configured = Settings.from_env(env)
    assert configured.ingest.auth("acme").secrets == ("acme-secret",)
    create_topics(configured, topic_specs(configured, providers))
    raw_topic = TopicNames(configured.topic_prefix).raw("acme")

    async with TestClient(TestServer(create_app(configured, providers))) as client:
        forged = await client.post(
            "/webhooks/acme", data=BODY, headers={"X-Acme-Signature": "0" * 64}
        )
        assert forged.status == 401, await forged.text()
        headers = acme.PROVIDER.sign(BODY, configured.ingest.auth("acme"), time.time())
        stored = await client.post("/webhooks/acme", data=BODY, headers=headers)
        assert stored.status == 200, await stored.text()

    [record] = read_topic(configured, raw_topic)
    assert (record.key(), record.value()) == (b"m-1@acme", BODY)
    assert headers_of(record)["mailstream.provider"] == b"acme"
    [event] = acme.PROVIDER.parse(record.value(), 1)
    assert (event["event_type"], event["recipient"], event["occurred_at"]) == (
        "DELIVERED",
        "ann@example.com",
        1_795_000_000_000,
    )
