"""The canonical email event: closed vocabularies, the field list and its JSON rendering.

A canonical event is a plain dict (typed as `EmailEvent`) holding exactly the fields of
`schemas/email_event.avsc`, in schema order. Enum values are `StrEnum` members (so they are
their Avro symbols), timestamps are int epoch milliseconds. Plain dicts rather than dataclasses
because the hot path goes straight from the provider's JSON to fastavro and back; `new_event`
is the guard against a misspelled or forgotten field.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, cast

import orjson


class EventType(enum.StrEnum):
    QUEUED = "QUEUED"  # accepted by the provider, not yet handed to the recipient's server
    SENT = "SENT"  # handed to the upstream MTA
    DELIVERED = "DELIVERED"  # accepted by the recipient's mail server
    DEFERRED = "DEFERRED"  # temporary failure, the provider will retry
    BOUNCED = "BOUNCED"  # delivery failed (see bounce_class)
    REJECTED = "REJECTED"  # refused by the provider itself before sending (e.g. suppressed)
    OPENED = "OPENED"  # tracking pixel loaded
    CLICKED = "CLICKED"  # tracked link followed (see url)
    COMPLAINED = "COMPLAINED"  # recipient reported the message as spam
    UNSUBSCRIBED = "UNSUBSCRIBED"  # recipient asked to receive no more mail
    REPLIED = "REPLIED"  # recipient answered the message
    UNKNOWN = "UNKNOWN"  # an event type this version does not know; never an error


class BounceClass(enum.StrEnum):
    HARD = "HARD"  # the address does not exist or never will accept mail: stop sending
    SOFT = "SOFT"  # temporary or recipient-side condition (mailbox full, host down): retry
    EXPIRED = "EXPIRED"  # the provider gave up retrying after its queue lifetime
    BLOCK = "BLOCK"  # policy, reputation, authentication or spam rejection: the sender's problem
    UNDETERMINED = "UNDETERMINED"  # no evidence to decide


class EmailEvent(TypedDict):
    """A canonical event: exactly the fields of `schemas/email_event.avsc`, in schema order.
    `event_type` and `bounce_class` hold Avro symbols: EventType / BounceClass members when
    built here, plain strings when decoded (the members are equal to them)."""

    event_id: str
    provider: str
    event_type: str
    recipient: str | None
    sender: str | None
    message_id: str | None
    occurred_at: int
    received_at: int | None
    bounce_class: str | None
    bounce_reason: str | None
    provider_category: str | None
    smtp_status: str | None
    diagnostic: str | None
    url: str | None
    user_agent: str | None
    ip: str | None
    tags: dict[str, str]
    tenant: str | None
    provider_flagged_machine: bool
    delivered_at: int | None


EMAIL_EVENT_FIELDS: tuple[str, ...] = tuple(EmailEvent.__annotations__)

EVENT_TIMESTAMP_FIELDS: tuple[str, ...] = ("occurred_at", "received_at", "delivered_at")

_REQUIRED_FIELDS = frozenset({"event_id", "provider", "event_type", "occurred_at"})
_FIELD_SET = frozenset(EMAIL_EVENT_FIELDS)
# Required fields are always overwritten; tags gets a fresh dict per event.
_TEMPLATE: dict[str, Any] = dict.fromkeys(EMAIL_EVENT_FIELDS) | {"provider_flagged_machine": False}


# A tenant id keys per-tenant state and published records: longer ones are invalid.
MAX_TENANT_CHARS = 200


def new_event(**fields: Any) -> EmailEvent:
    """A canonical event in schema field order; absent optional fields get their defaults.

    Raises TypeError for a field name the schema does not have or a required one left out.
    """
    keys = fields.keys()
    if not keys <= _FIELD_SET:
        unknown = ", ".join(sorted(keys - _FIELD_SET))
        raise TypeError(f"unknown EmailEvent field(s): {unknown}")
    if not keys >= _REQUIRED_FIELDS:
        missing = ", ".join(sorted(_REQUIRED_FIELDS - keys))
        raise TypeError(f"missing required EmailEvent field(s): {missing}")
    event = _TEMPLATE.copy()
    event.update(fields)
    if event["tags"] is None:
        event["tags"] = {}
    return cast(EmailEvent, event)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_timestamp_ms(epoch_ms: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2023-09-20T15:14:02.000Z."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


def render_json_line(
    record: Mapping[str, Any], timestamp_fields: Iterable[str] = EVENT_TIMESTAMP_FIELDS
) -> str:
    """One record as a JSON line: field order kept, enums as symbols, the named epoch-ms
    fields as ISO 8601 strings, absent values as null. Shared by every command that prints
    records (normalize, simulate)."""
    rendered = dict(record)
    for name in timestamp_fields:
        value = rendered.get(name)
        if value is not None:
            rendered[name] = format_timestamp_ms(value)
    return orjson.dumps(rendered).decode()
