"""Every schema in schemas/ can read every released version kept in schemas/history/
(BACKWARD compatibility, checked with fastavro schema resolution), every enum has a default
(so readers on an older schema can read newer symbols), and every field is documented."""

from __future__ import annotations

import random
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from mailstream.schemas import history_versions, load_schema, schema_names

SAMPLES_PER_VERSION = 50

SCHEMAS = schema_names()
RELEASES = [
    pytest.param(name, version, old, id=f"{name}-v{version}")
    for name in SCHEMAS
    for version, old in history_versions(name)
]


def named_types(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record and enum definition inside a schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from named_types(branch)
    elif isinstance(schema, dict):
        if schema.get("type") in {"record", "enum"}:
            yield schema
        for field in schema.get("fields", []):
            yield from named_types(field["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from named_types(schema[key])
        if isinstance(schema.get("type"), dict | list):
            yield from named_types(schema["type"])


def test_there_are_schemas() -> None:
    assert {"email_event", "dead_letter"} <= set(SCHEMAS)


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_parses(name: str) -> None:
    parse_schema(load_schema(name))


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_has_a_released_version(name: str) -> None:
    assert history_versions(name), (
        f"copy schemas/{name}.avsc to schemas/history/{name}/v1.avsc when it is first released"
    )


@pytest.mark.parametrize("name", SCHEMAS)
def test_versions_are_numbered_from_one_without_gaps(name: str) -> None:
    versions = [version for version, _ in history_versions(name)]
    assert versions == list(range(1, len(versions) + 1))


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_enum_has_a_default(name: str) -> None:
    for definition in named_types(load_schema(name)):
        if definition["type"] == "enum":
            assert definition.get("default") in definition["symbols"], definition["name"]


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_field_is_documented(name: str) -> None:
    for definition in named_types(load_schema(name)):
        for field in definition.get("fields", []):
            assert field.get("doc"), f"{definition['name']}.{field['name']} has no doc"


def read_samples_of(old: dict[str, Any], new: dict[str, Any], seed: str) -> None:
    """Write generated records with `old`, read them back with `new` as the reader schema."""
    writer, reader = parse_schema(old), parse_schema(new)
    random.seed(seed)
    for record in generate_many(old, SAMPLES_PER_VERSION):
        buffer = BytesIO()
        schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        schemaless_reader(buffer, writer, reader)


@pytest.mark.parametrize(("name", "version", "old"), RELEASES)
def test_current_schema_reads_data_written_with_a_release(
    name: str, version: int, old: dict[str, Any]
) -> None:
    read_samples_of(old, load_schema(name), f"{name}-v{version}")


def test_the_check_catches_a_breaking_change() -> None:
    breaking = load_schema("email_event")
    breaking["fields"].append({"name": "campaign", "type": "string", "doc": "no default"})
    with pytest.raises(Exception, match="campaign"):
        read_samples_of(load_schema("email_event"), breaking, "breaking")


@pytest.mark.parametrize(("name", "version", "old"), RELEASES)
def test_new_fields_have_defaults(name: str, version: int, old: dict[str, Any]) -> None:
    """The schema resolution rule behind BACKWARD compatibility, stated directly so a
    failure names the field."""
    old_fields = {field["name"] for field in old.get("fields", [])}
    for field in load_schema(name).get("fields", []):
        if field["name"] not in old_fields:
            new_field = f"{name}.{field['name']}"
            assert "default" in field, f"{new_field} is new since v{version}: add a default"


def test_the_schema_readme_documents_every_field_of_every_schema() -> None:
    from pathlib import Path

    from mailstream.schemas import load_schema

    folder = Path(__file__).resolve().parents[2] / "schemas"
    readme = (folder / "README.md").read_text()
    for path in sorted(folder.glob("*.avsc")):
        schema = load_schema(path.stem)
        section = readme.split(f"## {schema['name']} (`{path.name}`")
        assert len(section) == 2, f"schemas/README.md has no section for {path.name}"
        table = section[1].split("\n## ")[0]
        for field in schema["fields"]:
            assert f"| `{field['name']}` |" in table, (
                f"{path.name}: field {field['name']} undocumented"
            )


def avro_schema(schema: dict[str, Any]) -> Any:
    import json

    import avro.schema

    return avro.schema.parse(json.dumps(schema))


def compatibility(reader: dict[str, Any], writer: dict[str, Any]) -> Any:
    from avro.compatibility import ReaderWriterCompatibilityChecker

    return ReaderWriterCompatibilityChecker().get_compatibility(
        avro_schema(reader), avro_schema(writer)
    )


@pytest.mark.parametrize(("name", "version", "old"), RELEASES)
def test_exact_compatibility_both_ways_with_every_release(
    name: str, version: int, old: dict[str, Any]
) -> None:
    """The avro package's reader/writer checker, beside the sampled round trips: the current
    schema reads every release (BACKWARD) and a consumer still on a release reads what the
    current schema writes (FORWARD)."""
    from avro.compatibility import SchemaCompatibilityType

    current = load_schema(name)
    backward = compatibility(reader=current, writer=old)
    forward = compatibility(reader=old, writer=current)
    assert backward.compatibility is SchemaCompatibilityType.compatible, backward.messages
    assert forward.compatibility is SchemaCompatibilityType.compatible, forward.messages


def test_the_exact_check_catches_a_breaking_change_and_a_real_evolution_passes() -> None:
    from avro.compatibility import SchemaCompatibilityType

    v1 = dict(history_versions("recipient_state"))[1]
    current = load_schema("recipient_state")
    assert {f["name"] for f in current["fields"]} - {f["name"] for f in v1["fields"]} == {
        "late_events",
        "scope",
        "tenant",
        "tenants",
    }
    retyped = load_schema("recipient_state")  # the recipient as a number: breaks both ways
    retyped["fields"] = [
        dict(field, type="long") if field["name"] == "recipient" else field
        for field in retyped["fields"]
    ]
    for reader, writer in ((retyped, current), (current, retyped)):
        result = compatibility(reader=reader, writer=writer)
        assert result.compatibility is SchemaCompatibilityType.incompatible


def test_a_reader_on_a_release_before_tenants_sees_a_tenant_suppression_as_suppressed() -> None:
    """Readers that know no tenants keep their meaning: a tenant's unsubscribe reads as
    SUPPRESSED / UNSUBSCRIBE in v2 of RecipientState and v1 of Suppression."""
    from fastavro import parse_schema, schemaless_reader, schemaless_writer

    from mailstream.codec import strip_logical_types
    from mailstream.events import new_event
    from mailstream.policy import default_policy
    from mailstream.recipient import apply, suppression_record

    unsubscribe = new_event(
        event_id="u1",
        provider="mailbot",
        event_type="UNSUBSCRIBED",
        occurred_at=1_700_000_000_000,
        recipient="ann@example.com",
        tenant="news",
    )
    state = apply(None, dict(unsubscribe), default_policy())
    assert not state.suppressed, "TENANT-scoped: no global suppression"
    for name, version, record in (
        ("recipient_state", 2, state.to_record()),
        ("suppression", 1, suppression_record(state)),
    ):
        writer = parse_schema(strip_logical_types(load_schema(name)))
        reader = parse_schema(strip_logical_types(dict(history_versions(name))[version]))
        buffer = BytesIO()
        schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        old = schemaless_reader(buffer, writer, reader)
        assert old.get("status", "SUPPRESSED") == "SUPPRESSED", name
        assert old.get("suppression_reason", old.get("reason")) == "UNSUBSCRIBE", name
        assert "tenants" not in old and "scope" not in old
