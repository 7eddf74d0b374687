"""The canonical event: field list, constructor and JSON-line rendering."""

from __future__ import annotations

import orjson
import pytest

from mailstream.events import (
    EMAIL_EVENT_FIELDS,
    BounceClass,
    EventType,
    format_timestamp_ms,
    new_event,
    render_json_line,
)
from mailstream.schemas import load_schema

REQUIRED = {"event_id": "e", "provider": "p", "event_type": EventType.SENT, "occurred_at": 0}


def schema_field(name: str) -> dict:
    return next(f for f in load_schema("email_event")["fields"] if f["name"] == name)


def enum_symbols(field_type: object) -> list[str]:
    branches = field_type if isinstance(field_type, list) else [field_type]
    return next(b["symbols"] for b in branches if isinstance(b, dict))


def test_field_list_is_the_schema_in_order() -> None:
    assert tuple(f["name"] for f in load_schema("email_event")["fields"]) == EMAIL_EVENT_FIELDS


def test_enums_are_the_schema_symbols() -> None:
    assert list(EventType) == enum_symbols(schema_field("event_type")["type"])
    assert list(BounceClass) == enum_symbols(schema_field("bounce_class")["type"])


def test_new_event_fills_defaults_in_schema_order() -> None:
    event = new_event(**REQUIRED)
    assert tuple(event) == EMAIL_EVENT_FIELDS
    assert event["recipient"] is None
    assert event["tags"] == {}
    assert event["provider_flagged_machine"] is False


def test_each_event_gets_its_own_tags() -> None:
    first, second = new_event(**REQUIRED), new_event(**REQUIRED)
    first["tags"]["a"] = "b"
    assert second["tags"] == {}


def test_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="recipent"):
        new_event(**REQUIRED, recipent="typo@example.com")


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_field_is_refused(missing: str) -> None:
    fields = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(TypeError, match=missing):
        new_event(**fields)


@pytest.mark.parametrize(
    ("epoch_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_695_222_842_000, "2023-09-20T15:14:02.000Z"),
        (1_710_545_577_401, "2024-03-15T23:32:57.401Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_timestamp_ms(epoch_ms: int, text: str) -> None:
    assert format_timestamp_ms(epoch_ms) == text


def test_render_json_line() -> None:
    event = new_event(**REQUIRED, bounce_class=BounceClass.SOFT, received_at=1_500, tags={"a": ""})
    line = render_json_line(event)
    assert "\n" not in line
    rendered = orjson.loads(line)
    assert list(rendered) == list(EMAIL_EVENT_FIELDS)
    assert rendered["event_type"] == "SENT"
    assert rendered["bounce_class"] == "SOFT"
    assert rendered["occurred_at"] == "1970-01-01T00:00:00.000Z"
    assert rendered["received_at"] == "1970-01-01T00:00:01.500Z"
    assert rendered["delivered_at"] is None
    assert event["occurred_at"] == 0  # the record itself is untouched


def test_render_json_line_of_other_records() -> None:
    line = render_json_line({"recipient": "a@b.c", "updated_at": 1000}, ("updated_at",))
    assert orjson.loads(line) == {"recipient": "a@b.c", "updated_at": "1970-01-01T00:00:01.000Z"}
