"""Avro encoding of Kafka record values, with the schema parsed once per codec.

Two wire formats:
- Avro single-object encoding (the default, no registry): C3 01, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, then the Avro body.
- Confluent Schema Registry framing: byte 0, the 4-byte big-endian schema id, then the body.

Hot path: fastavro turns timestamp-millis into datetimes, which costs time on both sides and
is not what the rest of the code uses. The codec parses a copy of the schema without its
`logicalType` keys, so epoch-millisecond ints go in and come out. The bytes are identical and
so is the fingerprint: the Parsing Canonical Form drops logical types anyway.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from mailstream.errors import DecodeError, ErrorKind, MailstreamError
from mailstream.schemas import history_versions, load_schema
from mailstream.settings import SchemaRegistrySettings, Settings

log = logging.getLogger("mailstream.codec")

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = 0


def strip_logical_types(schema: Any) -> Any:
    """A copy of `schema` without logicalType annotations (same bytes, ints for timestamps)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    return schema


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint that single-object encoding puts in its header."""
    canonical_form = to_parsing_canonical_form(parse_schema(dict(schema)))
    return bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))


def record_full_name(schema: Mapping[str, Any]) -> str:
    namespace = schema.get("namespace")
    return f"{namespace}.{schema['name']}" if namespace else str(schema["name"])


def _parse_for_hot_path(schema: Mapping[str, Any]) -> Any:
    return parse_schema(strip_logical_types(dict(schema)))


class AvroCodec(ABC):
    """Encodes records of one schema; decodes records written with it or with a schema the
    codec can resolve (older versions), returning them in the codec's schema."""

    def __init__(self, schema: Mapping[str, Any], header: bytes) -> None:
        self.schema = dict(schema)
        self.full_name = record_full_name(schema)
        self._parsed = _parse_for_hot_path(schema)
        self._header = header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buffer = BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        writer, body_offset = self._writer_for(data)
        buffer = BytesIO(data)
        buffer.seek(body_offset)
        reader = None if writer is self._parsed else self._parsed
        try:
            record = cast(dict[str, Any], schemaless_reader(buffer, writer, reader))
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise DecodeError(
                ErrorKind.CORRUPT_BODY,
                f"bytes after the header are not a {self.full_name}: {exc!r}",
            ) from exc
        return record

    @abstractmethod
    def _writer_for(self, data: bytes) -> tuple[Any, int]:
        """The parsed writer schema named by the header of `data`, and where the body starts."""


class SingleObjectCodec(AvroCodec):
    """Avro single-object encoding; reads the current schema and the given older versions."""

    def __init__(
        self, schema: Mapping[str, Any], older_versions: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        own_fingerprint = schema_fingerprint(schema)
        super().__init__(schema, SINGLE_OBJECT_MARKER + own_fingerprint)
        self.fingerprint = own_fingerprint
        self._writers: dict[bytes, Any] = {
            schema_fingerprint(old): _parse_for_hot_path(old) for old in older_versions
        }
        self._writers[own_fingerprint] = self._parsed

    def _writer_for(self, data: bytes) -> tuple[Any, int]:
        if data[:2] != SINGLE_OBJECT_MARKER or len(data) < 10:
            raise DecodeError(
                ErrorKind.BAD_MAGIC,
                f"not Avro single-object encoding (expected C3 01 and an 8-byte fingerprint, "
                f"got {bytes(data[:10]).hex(' ')})",
            )
        writer = self._writers.get(bytes(data[2:10]))
        if writer is None:
            raise DecodeError(
                ErrorKind.UNKNOWN_SCHEMA,
                f"schema fingerprint {bytes(data[2:10]).hex()} is not {self.full_name} nor one "
                f"of its versions in schemas/history: written by a newer producer? Upgrade this "
                f"consumer (known: {', '.join(fp.hex() for fp in self._writers)})",
            )
        return writer, 10


class ConfluentCodec(AvroCodec):
    """Confluent Schema Registry framing; unknown writer ids are fetched once and cached."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        client: SchemaRegistryClient,
        subject: str,
        auto_register: bool = True,
    ) -> None:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        registered = Schema(json.dumps(schema), "AVRO")
        schema_id: int | None
        if auto_register:
            schema_id = register(client, subject, schema)
        else:
            try:
                schema_id = client.lookup_schema(subject, registered).schema_id
            except SchemaRegistryError as error:
                if error.http_status_code != 404:
                    raise
                raise MailstreamError(
                    f"{record_full_name(schema)} is not registered under subject {subject} and "
                    "auto-registration is off: run `mailstream schemas register`",
                    ErrorKind.UNKNOWN_SCHEMA,
                ) from None
        if schema_id is None:
            raise MailstreamError(
                f"the registry has no id for subject {subject}", ErrorKind.UNKNOWN_SCHEMA
            )
        super().__init__(schema, bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big"))
        self.schema_id = schema_id
        self._client = client
        self._writers: dict[int, Any] = {schema_id: self._parsed}

    def _writer_for(self, data: bytes) -> tuple[Any, int]:
        if len(data) < 5 or data[0] != CONFLUENT_MAGIC:
            raise DecodeError(
                ErrorKind.BAD_MAGIC,
                f"not Confluent framing (expected byte 00 and a 4-byte schema id, "
                f"got {bytes(data[:5]).hex(' ')})",
            )
        schema_id = int.from_bytes(data[1:5], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = self._fetch_writer(schema_id)
        return writer, 5

    def _fetch_writer(self, schema_id: int) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise  # an unreachable registry is an outage, not a bad record
            raise DecodeError(
                ErrorKind.UNKNOWN_SCHEMA, f"schema id {schema_id} is not in the registry"
            ) from exc
        if found.schema_str is None:
            raise DecodeError(ErrorKind.UNKNOWN_SCHEMA, f"schema id {schema_id} has no text")
        return _parse_for_hot_path(json.loads(found.schema_str))


COMPATIBILITY = "BACKWARD"  # consumers on a new schema read what older producers wrote


def register(client: SchemaRegistryClient, subject: str, schema: Mapping[str, Any]) -> int:
    """Register `schema` under `subject` (an existing identical version keeps its id) and keep
    the subject BACKWARD-compatible, so the registry refuses an incompatible next version
    (registries default to anything from NONE to BACKWARD)."""
    from confluent_kafka.schema_registry import ConfigCompatibilityLevel, Schema, ServerConfig
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    registered = Schema(json.dumps(schema), "AVRO")
    try:
        schema_id = client.register_schema(subject, registered)
    except SchemaRegistryError as conflict:
        # Processes starting together register the same new subject at once, and Apicurio
        # answers all but one 409 "already exists": then the winner registered this schema.
        # An incompatible schema is refused with 409 as well, and is not there to look up.
        if conflict.http_status_code != 409:
            raise
        try:
            found = client.lookup_schema(subject, registered).schema_id
        except SchemaRegistryError:
            raise conflict from None
        if found is None:
            raise conflict from None
        schema_id = found
    level = ConfigCompatibilityLevel(COMPATIBILITY)
    client.set_config(subject, ServerConfig(compatibility=level))
    return schema_id


def subject_of(settings: Settings, schema_name: str) -> str:
    """The topic prefix and the record's full name, e.g. staging.mailstream.v1.EmailEvent."""
    return f"{settings.topic_prefix}{record_full_name(load_schema(schema_name))}"


def registry_client(registry: SchemaRegistrySettings) -> SchemaRegistryClient:
    """One client per registry configuration in a process: its caches are shared."""
    client = _CLIENTS.get(registry)
    if client is None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        client = _CLIENTS[registry] = SchemaRegistryClient(registry.client_config())
    return client


_CLIENTS: dict[SchemaRegistrySettings, SchemaRegistryClient] = {}


def service_codec(settings: Settings, schema_name: str) -> AvroCodec:
    """The codec the services and operator commands use: single-object encoding, or with
    `MAILSTREAM_SCHEMA_REGISTRY_URL` the Confluent framing under `subject_of`. An unreachable
    registry (or one answering 5xx) is retried, with a warning each time, for
    `startup_timeout_seconds`; then a RegistryUnavailable error says where it looked."""
    registry = settings.schema_registry
    if registry.url is None:
        return codec_for(schema_name)
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    deadline = time.monotonic() + registry.startup_timeout_seconds
    pause = 0.5
    while True:
        try:
            return codec_for(
                schema_name,
                registry_client=registry_client(registry),
                subject=subject_of(settings, schema_name),
                auto_register=registry.auto_register,
            )
        except SchemaRegistryError as error:
            if error.http_status_code is None or error.http_status_code < 500:
                raise MailstreamError(
                    f"the schema registry at {registry.url} refused {schema_name}: {error}",
                    ErrorKind.REGISTRY_REFUSED,
                ) from None
            failure: Exception = error
        except MailstreamError:
            raise
        except Exception as error:  # the client's transport errors: connection refused, TLS
            failure = error
        if time.monotonic() + pause > deadline:
            raise RegistryUnavailable(
                f"the schema registry at {registry.url} did not answer within "
                f"{registry.startup_timeout_seconds:g} s: {failure}"
            ) from None
        log.warning(
            "the schema registry at %s: %s; retrying in %.1f s", registry.url, failure, pause
        )
        time.sleep(pause)
        pause = min(pause * 2, 10.0)


class RegistryUnavailable(MailstreamError):
    default_kind = ErrorKind.REGISTRY_UNAVAILABLE


def codec_for(
    schema_name: str,
    registry_url: str | None = None,
    *,
    registry_client: SchemaRegistryClient | None = None,
    subject: str | None = None,
    auto_register: bool = True,
) -> AvroCodec:
    """The codec of `schemas/<schema_name>.avsc`: single-object encoding by default, Confluent
    framing when a registry URL (or client) is given. The registry subject defaults to the
    record's full name (RecordNameStrategy), e.g. mailstream.v1.EmailEvent."""
    schema = load_schema(schema_name)
    if registry_url is None and registry_client is None:
        return SingleObjectCodec(schema, (old for _, old in history_versions(schema_name)))
    if registry_client is None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry_client = SchemaRegistryClient.new_client({"url": registry_url})
    subject = subject or record_full_name(schema)
    return ConfluentCodec(schema, registry_client, subject, auto_register)
