"""Maileroo webhooks.

Evidence: seeds/002_48ec36ae95fb5061.txt has the samples (clicked, opened, delivered, a
"bounce" sample whose event_type is `deferred`, delivered with tags); seeds/README.md has the
full event_type list and the signature scheme. Quirks, as the samples show them: opens and
clicks carry no recipient (event_data has only ip and user_agent; the pipeline resolves the
recipient from message_id); message_id comes with or without angle brackets; `tags` is null
or an object; `domain_id` is a number; the failure text is `event_data.reason` and starts
with the SMTP reply ("452-4.2.2 The recipient's inbox is out of storage space...").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailstream.classify import classify_bounce, extract_status
from mailstream.connectors.base import (
    HUMAN_AGENT,
    PROXY_AGENT,
    Item,
    Sample,
    SampleKind,
    WebhookProvider,
    clean_address,
    clean_message_id,
    deterministic_event_id,
    epoch_ms,
    first_secret,
    get_id,
    get_object,
    get_str,
    hmac_hex,
    require_mode,
    string_map,
    verify_hmac_header,
)
from mailstream.errors import ErrorKind, ParseError
from mailstream.events import EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "maileroo"
SIGNATURE_HEADER = "X-Maileroo-Signature"

# seeds/README.md: Maileroo's full event_type list. "failed" is its permanent failure (a
# bounce); "bounced" is accepted as its synonym.
EVENT_TYPES: dict[str, EventType] = {
    "accepted": EventType.QUEUED,
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "failed": EventType.BOUNCED,
    "bounced": EventType.BOUNCED,
    "rejected": EventType.REJECTED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "complained": EventType.COMPLAINED,
}
# Failures that get a bounce_class; a deferral typically classifies SOFT (4.x.x).
CLASSIFIED_TYPES = frozenset({EventType.BOUNCED, EventType.DEFERRED, EventType.REJECTED})


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    event_type = EVENT_TYPES.get(get_str(item, "event_type") or "", EventType.UNKNOWN)
    data = get_object(item, "event_data") or {}
    reason = get_str(data, "reason")
    bounce_class, bounce_reason = None, None
    if event_type in CLASSIFIED_TYPES:
        bounce_class, bounce_reason = classify_bounce(None, None, reason)
    event = new_event(
        event_id=get_str(item, "event_id") or deterministic_event_id(NAME, item),
        provider=NAME,
        event_type=event_type,
        recipient=clean_address(get_str(data, "to")),
        message_id=message_id_of(item),
        occurred_at=_occurred_at(item),
        received_at=received_at,
        bounce_class=bounce_class,
        bounce_reason=bounce_reason,
        smtp_status=extract_status(reason),
        diagnostic=reason,
        url=get_str(data, "original_url"),
        user_agent=get_str(data, "user_agent"),
        ip=get_str(data, "ip"),
        tags=string_map(item.get("tags"), "tags"),
        tenant=get_id(item, "domain_id"),
    )
    return [event]


def _occurred_at(item: Item) -> int:
    # inserted_at is the same moment to within a second in every seed sample.
    for name in ("event_time", "inserted_at"):
        value = item.get(name)
        if value is not None:
            return epoch_ms(value, name)
    raise ParseError(
        ErrorKind.MISSING_FIELD, "Maileroo event has neither event_time nor inserted_at"
    )


def message_id_of(item: Item) -> str | None:
    return clean_message_id(get_str(item, "message_id"))


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """Hex HMAC-SHA256 of the raw body, in X-Maileroo-Signature unless configured otherwise."""
    require_mode(config, "hmac", NAME)
    verify_hmac_header(headers, config.signature_header or SIGNATURE_HEADER, body, config, NAME)


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    return {config.signature_header or SIGNATURE_HEADER: hmac_hex(first_secret(config, NAME), body)}


def sample_payload(
    event_type: str, to: str | None, message_id: str, at_ms: int, event_id: str, **data: str
) -> dict[str, Any]:
    """A Maileroo webhook in the shape of the seed samples; `data` goes into event_data."""
    event_data: dict[str, Any] = {"to": to} if to is not None else {}
    event_data.update(data)
    return {
        "domain_id": 774,
        "event_data": event_data,
        "event_id": event_id,
        "event_time": at_ms // 1000,
        "event_type": event_type,
        "inserted_at": "2024-03-15T23:32:57.401Z",
        "message_id": f"<{message_id}>",
        "message_reference_id": event_id[:32],
        "tags": {"campaign": "spring"},
        "user_id": 323,
    }


def sample(event: Sample) -> dict[str, Any] | None:
    agent = PROXY_AGENT if event.kind == "open_machine" else HUMAN_AGENT
    reader = {"ip": "203.0.113.9", "user_agent": agent}
    shapes: dict[SampleKind, tuple[str, str | None, dict[str, str]]] = {
        "delivered": ("delivered", event.address, {}),
        "hard": (
            "failed",
            event.address,
            {"reason": "550-5.1.1 The email account that you tried to reach does not exist."},
        ),
        "soft": (
            "failed",
            event.address,
            {"reason": "452-4.2.2 The recipient's inbox is out of storage space."},
        ),
        "deferred": ("deferred", event.address, {"reason": "421-4.7.0 Try again later"}),
        "open": ("opened", None, reader),
        "open_machine": ("opened", None, {"ip": "66.249.84.1", "user_agent": agent}),
        "click": ("clicked", None, reader | {"original_url": event.url}),
        "complaint": ("complained", event.address, {}),
    }
    if event.kind not in shapes:
        return None  # Maileroo reports no replies
    event_type, to, data = shapes[event.kind]
    return sample_payload(event_type, to, event.message_id, event.at_ms, event.event_id, **data)


PROVIDER = WebhookProvider(NAME, normalize, verify, sign, message_id_of, sample)
