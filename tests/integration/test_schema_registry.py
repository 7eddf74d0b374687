"""The Confluent wire format against a real schema registry (Apicurio's Confluent-compatible
API, started by the project: `mailstream registry`): the worker and the readers end to end,
subjects per topic prefix with BACKWARD compatibility, an incompatible change refused, an
optional field added and read both ways, and `mailstream schemas register|check`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mailstream.cli import main
from mailstream.codec import ConfluentCodec, register, service_codec, subject_of
from mailstream.connectors.samples import campaign_rounds
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.policy import default_policy
from mailstream.recipient import RecipientState
from mailstream.schemas import load_schema, schema_names
from mailstream.settings import SchemaRegistrySettings, Settings
from mailstream.streams.reader import latest_by_key, read_to_end, read_until
from mailstream.streams.simulate import simulate
from mailstream.topics import TopicNames
from tests.integration.harness import running_worker, send_envelopes

pytestmark = pytest.mark.kafka

SUPPRESSION = {
    "recipient": "gone@example.com",
    "reason": "HARD_BOUNCE",
    "since": 1_795_000_000_000,
    "event_id": "e-1",
    "source": "event",
    "actor": None,
    "note": None,
    "scope": "GLOBAL",
    "tenant": None,
}


@pytest.fixture
def registered(settings: Settings, schema_registry_url: str) -> Settings:
    return replace(settings, schema_registry=SchemaRegistrySettings(url=schema_registry_url))


@pytest.fixture
def client(registered: Settings) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient(registered.schema_registry.client_config()) as client:
        yield client


def test_the_worker_and_the_readers_speak_the_registry_end_to_end(
    registered: Settings, names: TopicNames, client: SchemaRegistryClient, tmp_path: Path
) -> None:
    [envelopes] = campaign_rounds(12, rounds=1, seed=4)
    expected = {k: s.to_record() for k, s in simulate(envelopes, default_policy()).items()}
    states = service_codec(registered, "recipient_state")

    def published(records: list[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
        return {
            key.decode(): RecipientState.from_record(states.decode(value)).to_record()
            for key, value in latest_by_key(records).items()
            if key is not None and value is not None
        }

    with running_worker(registered, tmp_path / "worker.log") as worker:
        send_envelopes(registered, envelopes)
        try:
            read_until(registered, names.recipient_state, lambda r: published(r) == expected, 90)
        except TimeoutError:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
        assert worker.poll() is None
    values = [r.value for r in read_to_end(registered, names.recipient_state) if r.value]
    assert {(value[:1], int.from_bytes(value[1:5], "big")) for value in values} == {
        (b"\x00", states.schema_id)
    }, "every state is Confluent-framed with the registered id"
    ours = {s for s in client.get_subjects() if s.startswith(registered.topic_prefix)}
    assert ours == {subject_of(registered, name) for name in schema_names()}
    for subject in ours:
        assert client.get_compatibility(subject) == "BACKWARD"


def test_an_incompatible_change_is_refused_and_an_optional_field_is_read_both_ways(
    registered: Settings, client: SchemaRegistryClient
) -> None:
    subject = subject_of(registered, "suppression")
    current = load_schema("suppression")
    register(client, subject, current)

    changed_type = copy.deepcopy(current)
    changed_type["fields"][0]["type"] = "long"
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(_json(changed_type), "AVRO"))
    assert refused.value.http_status_code == 409

    evolved = copy.deepcopy(current)
    evolved["fields"].append(
        {"name": "region", "type": ["null", "string"], "default": None, "doc": "where it applies"}
    )
    register(client, subject, evolved)
    old_reader = ConfluentCodec(current, client, subject, auto_register=False)
    new_reader = ConfluentCodec(evolved, client, subject, auto_register=False)
    assert old_reader.schema_id != new_reader.schema_id
    written_by_new = new_reader.encode({**SUPPRESSION, "region": "eu-west"})
    assert old_reader.decode(written_by_new) == SUPPRESSION
    assert new_reader.decode(old_reader.encode(SUPPRESSION)) == {**SUPPRESSION, "region": None}


def test_without_auto_registration_the_schemas_command_registers_what_the_services_look_up(
    registered: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lookup_only = replace(
        registered, schema_registry=replace(registered.schema_registry, auto_register=False)
    )
    with pytest.raises(MailstreamError) as unregistered:
        service_codec(lookup_only, "suppression")
    assert unregistered.value.kind == ErrorKind.UNKNOWN_SCHEMA
    assert "mailstream schemas register" in unregistered.value.message
    monkeypatch.setenv("MAILSTREAM_SCHEMA_REGISTRY_URL", str(registered.schema_registry.url))
    monkeypatch.setenv("MAILSTREAM_TOPIC_PREFIX", registered.topic_prefix)
    assert main(["schemas", "check"]) == 0
    assert capsys.readouterr().out.count("new subject") == len(schema_names())
    assert main(["schemas", "register"]) == 0
    assert main(["schemas", "check"]) == 0
    assert capsys.readouterr().out.count(" compatible") == len(schema_names())
    codec = service_codec(lookup_only, "suppression")
    assert codec.decode(codec.encode(SUPPRESSION)) == SUPPRESSION


def test_an_unreachable_registry_is_retried_then_reported(settings: Settings) -> None:
    nobody = SchemaRegistrySettings(url="http://127.0.0.1:9", startup_timeout_seconds=1.5)
    with pytest.raises(MailstreamError) as unavailable:
        service_codec(replace(settings, schema_registry=nobody), "suppression")
    assert unavailable.value.kind == ErrorKind.REGISTRY_UNAVAILABLE
    assert "http://127.0.0.1:9 did not answer within 1.5 s" in unavailable.value.message


def _json(schema: dict[str, Any]) -> str:
    import json

    return json.dumps(schema)
