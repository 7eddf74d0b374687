"""Avro codecs: single-object encoding (default) and Confluent Schema Registry framing."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from mailstream.codec import (
    SINGLE_OBJECT_MARKER,
    ConfluentCodec,
    SingleObjectCodec,
    codec_for,
    register,
    schema_fingerprint,
    strip_logical_types,
)
from mailstream.errors import DecodeError
from mailstream.events import EventType, new_event
from mailstream.schemas import load_schema

PAYLOADS = Path(__file__).parent.parent / "payloads"


def golden_events() -> list[dict[str, Any]]:
    return [
        event
        for path in sorted(PAYLOADS.glob("*/*.expected.json"))
        for event in orjson.loads(path.read_bytes())
    ]


def sample_event(**fields: Any) -> dict[str, Any]:
    return new_event(
        event_id="e1",
        provider="maileroo",
        event_type=EventType.DELIVERED,
        occurred_at=1_710_545_542_000,
        received_at=1_710_545_543_123,
        **fields,
    )


def rabin_fingerprint_reference(data: bytes) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_single_object_round_trip_of_every_golden_event() -> None:
    codec = codec_for("email_event")
    for event in golden_events():
        assert codec.decode(codec.encode(event)) == event


def test_single_object_header_layout() -> None:
    codec = codec_for("email_event")
    data = codec.encode(sample_event())
    assert data[:2] == SINGLE_OBJECT_MARKER == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(load_schema("email_event"))


def test_fingerprint_matches_fastavro_and_the_spec() -> None:
    schema = load_schema("email_event")
    canonical_form = to_parsing_canonical_form(parse_schema(schema))
    expected = bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))
    assert schema_fingerprint(schema) == expected
    assert rabin_fingerprint_reference(canonical_form.encode()) == expected


def test_logical_types_do_not_change_the_fingerprint_or_the_bytes() -> None:
    schema = load_schema("email_event")
    assert schema_fingerprint(strip_logical_types(schema)) == schema_fingerprint(schema)
    event = sample_event(delivered_at=1_710_545_600_000)
    with_logical_types = BytesIO()
    schemaless_writer(with_logical_types, parse_schema(schema), event)
    assert codec_for("email_event").encode(event)[10:] == with_logical_types.getvalue()


def test_timestamps_stay_ints() -> None:
    codec = codec_for("email_event")
    decoded = codec.decode(codec.encode(sample_event(delivered_at=5)))
    assert [type(decoded[name]) for name in ("occurred_at", "received_at", "delivered_at")] == [
        int
    ] * 3


def test_enums_decode_as_their_symbols() -> None:
    codec = codec_for("email_event")
    decoded = codec.decode(codec.encode(sample_event(bounce_class="SOFT")))
    assert (decoded["event_type"], decoded["bounce_class"]) == ("DELIVERED", "SOFT")


def test_unknown_fingerprint_is_a_clear_error() -> None:
    data = bytearray(codec_for("email_event").encode(sample_event()))
    data[2:10] = b"\x00" * 8
    with pytest.raises(
        DecodeError, match=r"0000000000000000 is not mailstream\.v1\.EmailEvent"
    ) as e:
        codec_for("email_event").decode(bytes(data))
    assert e.value.kind == "unknown_schema"


@pytest.mark.parametrize("data", [b"", b"\x00\x01", b"\xc3\x01\x00", b'{"json": true}'])
def test_bad_header_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as error:
        codec_for("email_event").decode(data)
    assert error.value.kind == "bad_magic"


def test_truncated_body_is_a_decode_error() -> None:
    data = codec_for("email_event").encode(sample_event())
    with pytest.raises(DecodeError) as error:
        codec_for("email_event").decode(data[:-5])
    assert error.value.kind == "corrupt_body"


PIPELINE_FIELDS = {"delivered_at", "provider_flagged_machine"}


def older_email_event_schema() -> dict[str, Any]:
    """A plausible earlier release: without the two pipeline fields."""
    older = load_schema("email_event")
    older["fields"] = [f for f in older["fields"] if f["name"] not in PIPELINE_FIELDS]
    return older


def test_records_of_an_older_version_are_read_into_the_current_schema() -> None:
    older = older_email_event_schema()
    old_record = {k: v for k, v in sample_event().items() if k not in PIPELINE_FIELDS}
    data = SingleObjectCodec(older).encode(old_record)
    current = SingleObjectCodec(load_schema("email_event"), [older])
    assert current.decode(data) == sample_event()
    with pytest.raises(DecodeError, match=r"unknown_schema|not mailstream"):
        SingleObjectCodec(load_schema("email_event")).decode(data)


@pytest.fixture
def registry() -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": "mock://codec-test"})


def test_confluent_framing(registry: Any) -> None:
    codec = codec_for("email_event", registry_client=registry)
    assert isinstance(codec, ConfluentCodec)
    data = codec.encode(sample_event())
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == codec.schema_id
    assert data[5:] == codec_for("email_event").encode(sample_event())[10:]
    assert codec.decode(data) == sample_event()
    registered = registry.get_schema(codec.schema_id)
    assert json.loads(registered.schema_str) == load_schema("email_event")


def test_confluent_subject_defaults_to_the_record_name(registry: Any) -> None:
    codec_for("email_event", registry_client=registry)
    assert registry.get_latest_version("mailstream.v1.EmailEvent").schema_id is not None


def test_confluent_lookup_without_auto_register(registry: Any) -> None:
    registered = codec_for("dead_letter", registry_client=registry)
    looked_up = codec_for("dead_letter", registry_client=registry, auto_register=False)
    assert looked_up.schema_id == registered.schema_id


def test_confluent_reads_records_written_with_another_registered_schema(registry: Any) -> None:
    older = older_email_event_schema()
    old_codec = ConfluentCodec(older, registry, "mailstream.v1.EmailEvent")
    current = codec_for("email_event", registry_client=registry)
    assert old_codec.schema_id != current.schema_id
    old_record = {k: v for k, v in sample_event().items() if k not in PIPELINE_FIELDS}
    assert current.decode(old_codec.encode(old_record)) == sample_event()


def test_confluent_unknown_schema_id(registry: Any) -> None:
    codec = codec_for("email_event", registry_client=registry)
    data = b"\x00" + (9999).to_bytes(4, "big") + codec.encode(sample_event())[5:]
    with pytest.raises(DecodeError, match="9999") as error:
        codec.decode(data)
    assert error.value.kind == "unknown_schema"


def test_confluent_rejects_single_object_bytes(registry: Any) -> None:
    codec = codec_for("email_event", registry_client=registry)
    with pytest.raises(DecodeError) as error:
        codec.decode(codec_for("email_event").encode(sample_event()))
    assert error.value.kind == "bad_magic"


def test_registry_url_builds_a_registry_client() -> None:
    codec = codec_for("dead_letter", "mock://codec-url-test")
    assert isinstance(codec, ConfluentCodec)


def test_dead_letter_round_trip() -> None:
    codec = codec_for("dead_letter")
    record = {
        "source_topic": "email.raw.maileroo",
        "source_partition": 1,
        "source_offset": 42,
        "source_timestamp": 1_710_545_542_000,
        "key": b"m1",
        "payload": b"\xff not json",
        "headers": {"content-type": b"application/json"},
        "error_kind": "not_utf8",
        "error_message": "body is not UTF-8 (byte 0); send JSON in UTF-8",
        "failed_at": 1_710_545_543_000,
        "provider": "maileroo",
        "redrive_count": 0,
    }
    assert codec.decode(codec.encode(record)) == record


def test_a_registration_lost_to_a_concurrent_one_takes_the_winners_id(
    registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes starting together register a new subject at once; Apicurio answers all but
    one 409 "already exists". A 409 for a schema that is not there (incompatible) stays one."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = registry
    schema = load_schema("dead_letter")
    winner = client.register_schema("t.DeadLetter", Schema(json.dumps(schema), "AVRO"))

    def lose(subject: str, schema: object, normalize_schemas: bool = False) -> int:
        raise SchemaRegistryError(409, 409, "An artifact with ID ... already exists.")

    monkeypatch.setattr(client, "register_schema", lose)
    assert register(client, "t.DeadLetter", schema) == winner
    with pytest.raises(SchemaRegistryError) as refused:
        register(client, "t.Other", schema)
    assert refused.value.http_status_code == 409
