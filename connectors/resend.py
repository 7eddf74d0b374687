"""Resend webhooks.

Evidence: https://resend.com/docs/webhooks/event-types and its pages per event
(https://resend.com/docs/webhooks/emails/<event>, e.g. .../emails/bounced): every payload is
`{"type", "created_at", "data"}`, `created_at` being "ISO 8601 timestamp when the webhook event
was created"; `data` holds the email (`email_id`, `from` as "Name <a@b>", `to` as the "Array of
impacted recipient email addresses", `subject`, `tags`, `broadcast_id`, `template_id`) and the
event's details: `bounce` {`type`, `subType`, `message`, `diagnosticCode` (an array of SMTP
responses)}, `click` {`ipAddress`, `link`, `timestamp`, `userAgent`}, `failed` {`reason`}.
`tags` is an object in the sample payloads and an "Array of tag objects" {name, value} in the
parameter table; both are read. No event id is in the body (Svix's `svix-id` header is the
delivery id, which `normalize` does not see), so the event id is derived from the payload.

Recipients: one canonical event per address of `data.to` (the event id gets "/<address>"
when there are several), since delivery results are per recipient; opens and clicks of a
message sent to several addresses cannot be attributed to one of them (one tracking pixel,
one link per message), so they give one event with no recipient.

Signatures: https://resend.com/docs/webhooks/verify-webhooks-requests (Svix), manual scheme at
https://docs.svix.com/receiving/verifying-payloads/how-manual: `svix-signature` holds
space-separated `v1,<base64>` entries, each the base64 HMAC-SHA256 of
f"{svix-id}.{svix-timestamp}.{body}" keyed with the base64-decoded part of the secret after
`whsec_`; `svix-timestamp` is unix seconds, checked against a freshness window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from mailstream.connectors.base import (
    HUMAN_AGENT,
    MAX_CREDENTIAL_CHARS,
    Item,
    Sample,
    SampleKind,
    WebhookProvider,
    classified_failure,
    clean_address,
    clean_message_id,
    deterministic_event_id,
    epoch_ms,
    first_secret,
    fresh_timestamp,
    get_object,
    get_str,
    json_type,
    lookup_header,
    presented_credential,
    require_mode,
    secret_matches,
    string_map,
    table_key,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, format_timestamp_ms, new_event
from mailstream.settings import ProviderAuth

NAME = "resend"
ID_HEADER = "svix-id"
TIMESTAMP_HEADER = "svix-timestamp"
SIGNATURE_HEADER = "svix-signature"
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of Svix secrets, not a secret

# https://resend.com/docs/webhooks/event-types. email.sent: "the API request was successful.
# Resend will attempt to deliver the message" (accepted, not yet handed over: QUEUED), as is
# email.scheduled. email.failed: "failed to send due to an error" (invalid recipients, API
# key, domain verification, quota): refused by Resend itself, REJECTED. email.received
# (inbound mail, no reference to the message it may answer), contact.* and domain.* events
# are UNKNOWN.
EVENT_TYPES: dict[str, EventType] = {
    "email.scheduled": EventType.QUEUED,
    "email.sent": EventType.QUEUED,
    "email.delivered": EventType.DELIVERED,
    "email.delivery_delayed": EventType.DEFERRED,
    "email.bounced": EventType.BOUNCED,
    "email.failed": EventType.REJECTED,
    "email.suppressed": EventType.REJECTED,
    "email.opened": EventType.OPENED,
    "email.clicked": EventType.CLICKED,
    "email.complained": EventType.COMPLAINED,
}

# https://resend.com/docs/dashboard/emails/email-bounces (the Amazon SES bounce types):
# Permanent ("hard bounce", never deliverable), Transient ("soft bounce", may succeed later;
# the bounced page also names it "Temporary"), Undetermined (not enough detail to classify).
BOUNCE_TYPES: dict[str, BounceClass] = {
    "permanent": BounceClass.HARD,
    "transient": BounceClass.SOFT,
    "temporary": BounceClass.SOFT,
    "undetermined": BounceClass.UNDETERMINED,
}
# Same page, subtypes that decide differently from their type. Transient ContentRejected /
# AttachmentRejected: the receiving server refuses the content, the sender's problem (BLOCK).
BOUNCE_SUBTYPES: dict[str, BounceClass] = {
    "contentrejected": BounceClass.BLOCK,
    "attachmentrejected": BounceClass.BLOCK,
}
# Permanent Suppressed / OnAccountSuppressionList bounces, and the email.suppressed event
# (`data.suppressed` {type, message}): Resend did not attempt delivery. Refused by the
# provider itself: REJECTED (the EventType's own example). Suppressed: the address "is on the
# suppression list because it has a recent history of producing hard bounces" (the bounced
# sample), so HARD. OnAccountSuppressionList: the account's own list, which "does not count
# toward your bounce rate metric" (the suppressed sample) and may hold addresses for any
# reason: no class of its own, the classifier weighs the message.
SUPPRESSED_TYPE = "email.suppressed"
SUPPRESSION_CLASSES: dict[str, BounceClass | None] = {
    "suppressed": BounceClass.HARD,
    "onaccountsuppressionlist": None,
}
# email.delivery_delayed: "couldn't be delivered due to a temporary issue" (inbox full, a
# transient server issue), so SOFT; the payload carries no detail to weigh.
DEFERRAL_CLASS = BounceClass.SOFT
# Opens and clicks of a message to several addresses are not attributable to one of them.
ENGAGEMENT_TYPES = frozenset({EventType.OPENED, EventType.CLICKED})


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    raw_type = get_str(item, "type")
    event_type = EVENT_TYPES.get(raw_type or "", EventType.UNKNOWN)
    occurred_at = _occurred_at(item)
    data = get_object(item, "data") or {}
    click = get_object(data, "click") or {}
    event_id = deterministic_event_id(NAME, item)
    common: dict[str, Any] = {
        "provider": NAME,
        "sender": _address(data.get("from"), "from"),
        "message_id": clean_message_id(get_str(data, "email_id")),
        "occurred_at": occurred_at,
        "received_at": received_at,
        "url": get_str(click, "link"),
        "user_agent": get_str(click, "userAgent"),
        "ip": get_str(click, "ipAddress"),
        **_failure_fields(data, raw_type, event_type),
    }
    common.setdefault("event_type", event_type)
    recipients = _recipients(data.get("to"))
    tags = _tags(data.get("tags"))
    if len(recipients) > 1 and common["event_type"] in ENGAGEMENT_TYPES:
        recipients = []
    if len(recipients) <= 1:
        recipient = recipients[0] if recipients else None
        return [new_event(event_id=event_id, recipient=recipient, tags=tags, **common)]
    return [
        new_event(event_id=f"{event_id}/{address}", recipient=address, tags=dict(tags), **common)
        for address in recipients
    ]


def message_id_of(item: Item) -> str | None:
    data = item.get("data")
    if not isinstance(data, dict):
        return None
    return clean_message_id(get_str(data, "email_id"))


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """Svix: every `v1,<base64>` entry of svix-signature is checked against every configured
    secret, with svix-timestamp (unix seconds) inside the freshness window either way."""
    require_mode(config, "hmac", NAME)
    header = config.signature_header or SIGNATURE_HEADER
    signatures = presented_credential(headers, header, config, bool(config.secrets), NAME)
    if signatures is None:
        return
    message_id = lookup_header(headers, ID_HEADER)
    if not message_id:
        raise SignatureError(f"missing {ID_HEADER} header")
    if len(message_id) > MAX_CREDENTIAL_CHARS:
        raise SignatureError(f"{ID_HEADER} is longer than {MAX_CREDENTIAL_CHARS} characters")
    timestamp = fresh_timestamp(headers, TIMESTAMP_HEADER, config, now)
    presented = [
        signature
        for version, _, signature in (entry.partition(",") for entry in signatures.split())
        if version == SIGNATURE_VERSION and signature
    ]
    if not presented:
        raise SignatureError(f"{header} must hold {SIGNATURE_VERSION},<base64> entries")
    signed = _signed_content(message_id, timestamp, body)
    expected = tuple(_signature(secret, signed) for secret in config.secrets)
    matched = False
    for signature in presented:  # every entry and every secret, without stopping early
        matched |= secret_matches(signature, expected)
    if not matched:
        raise SignatureError(f"{header} does not match: wrong secret or altered body")


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    message_id = "msg_" + hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()[:27]
    signed = _signed_content(message_id, timestamp, body)
    signature = _signature(first_secret(config, NAME), signed)
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: timestamp,
        config.signature_header or SIGNATURE_HEADER: f"{SIGNATURE_VERSION},{signature}",
    }


def _signed_content(message_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def _signature(secret: str, signed: bytes) -> str:
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _secret_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after `whsec_` (as Svix issues them); a secret
    that is not base64 there is used as its UTF-8 bytes (it then matches no real request)."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def sample_payload(
    event_type: str, to: str, email_id: str, at_ms: int, **details: Any
) -> dict[str, Any]:
    """A Resend webhook in the shape of the documentation's samples; `details` go in `data`."""
    return {
        "type": event_type,
        "created_at": format_timestamp_ms(at_ms),
        "data": {
            "created_at": format_timestamp_ms(max(at_ms - 1000, 0)),
            "email_id": email_id,
            "from": "Acme <onboarding@resend.dev>",
            "to": [to],
            "subject": "Sending this example",
            **details,
            "tags": {"category": "confirm_email"},
        },
    }


def sample(event: Sample) -> dict[str, Any] | None:
    when = format_timestamp_ms(event.at_ms)
    shapes: dict[SampleKind, tuple[str, dict[str, Any]]] = {
        "delivered": ("email.delivered", {}),
        "hard": (
            "email.bounced",
            {
                "bounce": {
                    "diagnosticCode": ["smtp; 550 5.1.1 The email account does not exist"],
                    "message": "The recipient's email address does not exist.",
                    "subType": "NoEmail",
                    "type": "Permanent",
                }
            },
        ),
        "soft": (
            "email.bounced",
            {
                "bounce": {
                    "diagnosticCode": ["smtp; 452 4.2.2 The recipient's inbox is full"],
                    "message": "The recipient's mailbox is full.",
                    "subType": "MailboxFull",
                    "type": "Transient",
                }
            },
        ),
        "deferred": ("email.delivery_delayed", {}),
        "open": ("email.opened", {}),
        "click": (
            "email.clicked",
            {
                "click": {
                    "ipAddress": "203.0.113.9",
                    "link": event.url,
                    "timestamp": when,
                    "userAgent": HUMAN_AGENT,
                }
            },
        ),
        "complaint": ("email.complained", {}),
    }
    if event.kind not in shapes:
        return None  # Resend reports no replies, and no opener details to tell a proxy by
    event_type, details = shapes[event.kind]
    return sample_payload(event_type, event.address, event.message_id, event.at_ms, **details)


PROVIDER = WebhookProvider(NAME, normalize, verify, sign, message_id_of, sample)


# --- Field reading --------------------------------------------------------------------------


def _occurred_at(item: Item) -> int:
    value = item.get("created_at")
    if value is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "Resend event has no created_at")
    return epoch_ms(value, "created_at")


def _address(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return clean_address(value)
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected an address")


def _recipients(to: Any) -> list[str]:
    values = to if isinstance(to, list) else [to]
    addresses = (_address(value, "to") for value in values)
    return list(dict.fromkeys(address for address in addresses if address))


def _tags(value: Any) -> dict[str, str]:
    """`tags` as an object, or as the documented array of {"name", "value"} objects."""
    if not isinstance(value, list):
        return string_map(value, "tags")
    tags: dict[str, Any] = {}
    for tag in value:
        if not isinstance(tag, dict):
            raise ParseError(
                ErrorKind.WRONG_TYPE, f"a 'tags' entry is {json_type(tag)}, expected an object"
            )
        name = get_str(tag, "name")
        if name is not None:
            tags[name] = tag.get("value")
    return string_map(tags, "tags")


def _failure_fields(data: Item, raw_type: str | None, event_type: EventType) -> dict[str, Any]:
    """Bounce, suppression and failure details; a bounce of a suppressed address is REJECTED."""
    if event_type is EventType.BOUNCED:
        return _bounce_fields(get_object(data, "bounce") or {})
    if raw_type == SUPPRESSED_TYPE:
        suppressed = get_object(data, "suppressed") or {}
        kind = get_str(suppressed, "type")
        category_class = SUPPRESSION_CLASSES.get(table_key(kind))
        return classified_failure(category_class, None, get_str(suppressed, "message"), kind)
    if event_type is EventType.REJECTED:
        reason = get_str(get_object(data, "failed") or {}, "reason")
        return classified_failure(None, None, reason, reason)
    if event_type is EventType.DEFERRED:
        return {"bounce_class": DEFERRAL_CLASS}
    return {}


def _bounce_fields(bounce: Item) -> dict[str, Any]:
    kind = get_str(bounce, "type")
    subtype = get_str(bounce, "subType")
    category = "/".join(part for part in (kind, subtype) if part) or None
    status = _first_diagnostic_code(bounce)
    message = get_str(bounce, "message")
    shown = message if message is not None else status  # the SMTP reply when there is no text
    if table_key(kind) == "permanent" and table_key(subtype) in SUPPRESSION_CLASSES:
        category_class = SUPPRESSION_CLASSES[table_key(subtype)]
        return classified_failure(category_class, status, message, category, diagnostic=shown) | {
            "event_type": EventType.REJECTED
        }
    category_class = BOUNCE_SUBTYPES.get(table_key(subtype)) or BOUNCE_TYPES.get(table_key(kind))
    return classified_failure(category_class, status, message, category, diagnostic=shown)


def _first_diagnostic_code(bounce: Item) -> str | None:
    codes = bounce.get("diagnosticCode")
    if codes is None or isinstance(codes, str):
        return codes
    if isinstance(codes, list) and all(isinstance(code, str) for code in codes):
        return codes[0] if codes else None
    raise ParseError(
        ErrorKind.WRONG_TYPE, "'diagnosticCode' must be a string or an array of strings"
    )
