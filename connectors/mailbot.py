"""mailbot (getmail.bot) webhooks.

Evidence. seeds/000_c1e942596ef2f9c1.txt: the example handler reads `event.event_type`
("message.opened"), `event.message_id`, `event.created_at` and `event.url` straight off the
body, so the documented shape is flat; the send call shows the message's own fields
(`inbox_id`, `to` as a list, `labels` such as "campaign:xyz" and "outbound"). seeds/README.md:
signatures, message.received (inbound mail), at-least-once delivery (dedupe on event_id).
No complete sample payload is published, and webhook APIs commonly wrap the event in a
`data` envelope holding a `message` object. So each field is read from the top level first,
then from `data`, then from the `message` object (top-level or in `data`), and only under
names that mean that field: the flat seed shape and the nested one parse the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailstream.classify import classify_bounce, extract_status
from mailstream.connectors.base import (
    HMAC_PREFIX,
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
    fresh_timestamp,
    get_id,
    get_str,
    hmac_hex,
    hmac_matches,
    json_type,
    presented_credential,
    require_mode,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, format_timestamp_ms, new_event
from mailstream.settings import ProviderAuth

NAME = "mailbot"
SIGNATURE_HEADER = "X-Mailbot-Signature"
TIMESTAMP_HEADER = "X-Mailbot-Timestamp"

# seeds/000 "What gets tracked"; message.replied: the "Replied" signal of its scoring rubric.
EVENT_TYPES: dict[str, EventType] = {
    "message.sent": EventType.SENT,
    "message.delivered": EventType.DELIVERED,
    "message.opened": EventType.OPENED,
    "message.clicked": EventType.CLICKED,
    "message.bounced": EventType.BOUNCED,
    "message.replied": EventType.REPLIED,
}
# seeds/README.md: inbound mail. It is a REPLIED event when it references an outbound message
# (its message_id is then that outbound message's id), otherwise UNKNOWN.
INBOUND_TYPE = "message.received"
REPLY_REFERENCE_FIELDS = ("in_reply_to", "reply_to_message_id", "in_reply_to_message_id")

# seeds/000 "Suppress on bounce" speaks of hard and soft bounces without naming a field;
# these are the words ESPs use for a bounce type. Others are classified from status and text.
BOUNCE_TYPES: dict[str, BounceClass] = {
    "hard": BounceClass.HARD,
    "permanent": BounceClass.HARD,
    "soft": BounceClass.SOFT,
    "transient": BounceClass.SOFT,
    "temporary": BounceClass.SOFT,
    "block": BounceClass.BLOCK,
    "blocked": BounceClass.BLOCK,
}

EVENT_TYPE_FIELDS = ("event_type", "type")
TIMESTAMP_FIELDS = ("created_at", "timestamp")
# Bounce details: in a `bounce` object, or beside the other fields.
BOUNCE_STATUS_FIELDS = ("status", "smtp_status")
BOUNCE_DIAGNOSTIC_FIELDS = ("diagnostic", "diagnostic_code", "reason", "message")
STATUS_FIELDS = ("smtp_status",)
DIAGNOSTIC_FIELDS = ("diagnostic", "diagnostic_code", "bounce_reason")

Layers = tuple[Item, ...]


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    envelope, layers, message = _layers(item)
    raw_type = _first_str(envelope, EVENT_TYPE_FIELDS)
    occurred_at = _occurred_at(envelope)
    event_id = _first_str(envelope, ("event_id",)) or deterministic_event_id(NAME, item)
    if raw_type == INBOUND_TYPE:
        return [_inbound_event(event_id, layers, occurred_at, received_at)]
    event_type = EVENT_TYPES.get(raw_type or "", EventType.UNKNOWN)
    common: dict[str, Any] = {
        "provider": NAME,
        "event_type": event_type,
        "sender": _address(_first_value(layers, ("from", "sender")), "from"),
        "message_id": _message_id(layers, message),
        "occurred_at": occurred_at,
        "received_at": received_at,
        "url": _first_str(envelope, ("url",)),
        "user_agent": _first_str(envelope, ("user_agent",)),
        "ip": _first_str(envelope, ("ip",)),
        "tenant": _first_id(layers, "inbox_id"),
        **_bounce_fields(layers, event_type),
    }
    recipients = _recipients(layers)
    tags = _tags(layers)
    if len(recipients) <= 1:
        recipient = recipients[0] if recipients else None
        return [new_event(event_id=event_id, recipient=recipient, tags=tags, **common)]
    # One provider event for several recipients: one canonical event each, with distinct ids.
    return [
        new_event(event_id=f"{event_id}/{address}", recipient=address, tags=dict(tags), **common)
        for address in recipients
    ]


def message_id_of(item: Item) -> str | None:
    """The outbound message id: for inbound replies, the message they answer."""
    envelope, layers, message = _layers(item)
    if _first_str(envelope, EVENT_TYPE_FIELDS) == INBOUND_TYPE:
        return clean_message_id(_first_str(layers, REPLY_REFERENCE_FIELDS))
    return _message_id(layers, message)


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """`X-Mailbot-Signature: sha256=<hex>`, HMAC-SHA256 of f"{X-Mailbot-Timestamp}." + body,
    with the timestamp (unix seconds) inside the freshness window in either direction."""
    require_mode(config, "hmac", NAME)
    header = config.signature_header or SIGNATURE_HEADER
    signature = presented_credential(headers, header, config, bool(config.secrets), NAME)
    if signature is None:
        return
    timestamp = fresh_timestamp(headers, TIMESTAMP_HEADER, config, now)
    if not signature.startswith(HMAC_PREFIX):
        raise SignatureError(f"{header} must look like {HMAC_PREFIX}<hex>")
    signed = timestamp.encode() + b"." + body
    if not hmac_matches(signature[len(HMAC_PREFIX) :], signed, config.secrets):
        raise SignatureError(f"{header} does not match: wrong secret or altered body")


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    digest = hmac_hex(first_secret(config, NAME), timestamp.encode() + b"." + body)
    return {
        TIMESTAMP_HEADER: timestamp,
        config.signature_header or SIGNATURE_HEADER: HMAC_PREFIX + digest,
    }


def sample_payload(
    event_type: str, recipient: str | None, message_id: str, at_ms: int, event_id: str, **extra: Any
) -> dict[str, Any]:
    """A mailbot webhook in the shape of seeds/000; `extra` adds top-level fields."""
    payload: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "message_id": message_id,
        "inbox_id": "inb_demo",
        "created_at": format_timestamp_ms(at_ms),
        "labels": ["outbound", "campaign:march-followup"],
    }
    if recipient is not None:
        payload["recipient"] = recipient
    payload.update(extra)
    return payload


_SAMPLE_SHAPES: dict[SampleKind, tuple[str, dict[str, str]]] = {
    "delivered": ("message.delivered", {}),
    "hard": ("message.bounced", {"bounce_type": "hard", "diagnostic": "550 5.1.1 user unknown"}),
    "soft": ("message.bounced", {"bounce_type": "soft", "diagnostic": "452 4.2.2 mailbox full"}),
    "deferred": ("message.deferred", {}),
    "open": ("message.opened", {"user_agent": HUMAN_AGENT}),
    "open_machine": ("message.opened", {"user_agent": PROXY_AGENT}),
    "click": ("message.clicked", {"user_agent": HUMAN_AGENT}),
    "reply": ("message.replied", {}),
}
_SAMPLES_NAMING_THE_RECIPIENT = frozenset(("delivered", "hard", "soft", "deferred", "reply"))


def sample(event: Sample) -> dict[str, Any] | None:
    if event.kind not in _SAMPLE_SHAPES:
        return None  # mailbot's documented events carry no complaints
    event_type, fields = _SAMPLE_SHAPES[event.kind]
    if event.kind == "click":
        fields = {"url": event.url} | fields
    recipient = event.address if event.kind in _SAMPLES_NAMING_THE_RECIPIENT else None
    return sample_payload(
        event_type, recipient, event.message_id, event.at_ms, event.event_id, **fields
    )


PROVIDER = WebhookProvider(NAME, normalize, verify, sign, message_id_of, sample)


# --- Field lookup ---------------------------------------------------------------------------


def _layers(item: Item) -> tuple[Layers, Layers, Item | None]:
    """(event-level objects, those plus the message object, the message object); outermost
    first. A `data` or `message` that is not an object (e.g. a message text) is not a layer."""
    data = _object(item.get("data"))
    message = _object(item.get("message")) or (_object(data.get("message")) if data else None)
    envelope = (item, data) if data else (item,)
    return envelope, (*envelope, message) if message else envelope, message


def _object(value: Any) -> Item | None:
    return value if isinstance(value, dict) else None


def _first_value(layers: Layers, names: tuple[str, ...]) -> Any:
    for layer in layers:
        for name in names:
            value = layer.get(name)
            if value is not None:
                return value
    return None


def _first_str(layers: Layers, names: tuple[str, ...]) -> str | None:
    for layer in layers:
        for name in names:
            value = get_str(layer, name)
            if value is not None:
                return value
    return None


def _first_id(layers: Layers, name: str) -> str | None:
    for layer in layers:
        value = get_id(layer, name)
        if value is not None:
            return value
    return None


def _occurred_at(envelope: Layers) -> int:
    for layer in envelope:
        for name in TIMESTAMP_FIELDS:
            value = layer.get(name)
            if value is not None:
                return epoch_ms(value, name)
    raise ParseError(ErrorKind.MISSING_FIELD, "mailbot event has neither created_at nor timestamp")


def _message_id(layers: Layers, message: Item | None) -> str | None:
    message_id = _first_str(layers, ("message_id",))
    if message_id is None and message is not None:
        message_id = get_str(message, "id")
    return clean_message_id(message_id)


def _address(value: Any, key: str) -> str | None:
    """An address given as "a@b", "Name <a@b>" or {"email": "a@b"}."""
    if value is None or isinstance(value, str):
        return clean_address(value)
    if isinstance(value, dict):
        return clean_address(get_str(value, "email"))
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected an address")


def _recipients(layers: Layers) -> list[str]:
    recipient = _address(_first_value(layers, ("recipient",)), "recipient")
    if recipient is not None:
        return [recipient]
    to = _first_value(layers, ("to",))
    values = to if isinstance(to, list) else [to]
    addresses = (_address(value, "to") for value in values)
    return list(dict.fromkeys(address for address in addresses if address))


def _tags(layers: Layers) -> dict[str, str]:
    """labels ["campaign:xyz", "outbound"] -> {"campaign": "xyz", "outbound": ""}."""
    labels = _first_value(layers, ("labels",))
    if labels is None:
        return {}
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ParseError(ErrorKind.WRONG_TYPE, "'labels' must be an array of strings")
    tags: dict[str, str] = {}
    for label in labels:
        name, _, value = label.partition(":")
        tags[name.strip()] = value.strip()
    return tags


def _bounce_fields(layers: Layers, event_type: EventType) -> dict[str, Any]:
    bounce = _object(_first_value(layers, ("bounce",)))
    category = _bounce_detail(bounce, ("type",), layers, ("bounce_type",))
    status = _bounce_detail(bounce, BOUNCE_STATUS_FIELDS, layers, STATUS_FIELDS)
    diagnostic = _bounce_detail(bounce, BOUNCE_DIAGNOSTIC_FIELDS, layers, DIAGNOSTIC_FIELDS)
    fields: dict[str, Any] = {
        "provider_category": category,
        "smtp_status": extract_status(status) or extract_status(diagnostic),
        "diagnostic": diagnostic,
    }
    if event_type is EventType.BOUNCED:
        category_class = BOUNCE_TYPES.get(category.strip().lower()) if category else None
        fields["bounce_class"], fields["bounce_reason"] = classify_bounce(
            category_class, status, diagnostic
        )
    return fields


def _bounce_detail(
    bounce: Item | None, bounce_names: tuple[str, ...], layers: Layers, names: tuple[str, ...]
) -> str | None:
    found = _first_str((bounce,), bounce_names) if bounce else None
    return found if found is not None else _first_str(layers, names)


def _inbound_event(
    event_id: str, layers: Layers, occurred_at: int, received_at: int | None
) -> EmailEvent:
    """Inbound mail: a reply when it references an outbound message. The contact is its
    sender, our address its recipient."""
    reply_to = _first_str(layers, REPLY_REFERENCE_FIELDS)
    event_type = EventType.REPLIED if reply_to else EventType.UNKNOWN
    to = _first_value(layers, ("to",))
    our_address = to[0] if isinstance(to, list) and to else to
    return new_event(
        event_id=event_id,
        provider=NAME,
        event_type=event_type,
        recipient=_address(_first_value(layers, ("from", "sender")), "from"),
        sender=_address(our_address, "to"),
        message_id=clean_message_id(reply_to),
        occurred_at=occurred_at,
        received_at=received_at,
        tenant=_first_id(layers, "inbox_id"),
        tags=_tags(layers),
    )
