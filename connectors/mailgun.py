"""Mailgun webhooks.

Evidence: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
(the envelope and its signature) and the event structure of the Events API, whose per-event
samples (mailgun/documentation, source/api-events.rst, "Per Event Result") are the objects a
webhook carries as `event-data`. Every webhook is one JSON object
`{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`; `event-data` holds
`event`, `timestamp` (float unix seconds), `id` (absent from the older samples: the id is then
derived from `event-data`, so a redelivery Mailgun signs anew keeps it), `recipient` (every
event pertains to one recipient), `envelope.sender`, `message.headers.message-id`, `tags` (a
list of labels), `user-variables` (the sender's own object), `delivery-status` {code, message,
description}, `severity` and `reason` for failures, `ip`, `client-info`, `geolocation` for
engagement and `url` for clicks. The golden doc_<event>.json cases put each of those samples,
verbatim, under the Securing Webhooks page's signature object.

Signatures: the hex HMAC-SHA256 of `timestamp` + `token` (concatenated), keyed with the HTTP
webhook signing key; `parent-signature` is the same made with the primary account's key, for a
subaccount's events. The signature does not cover `event-data`: a captured one verifies with
any other body. So the timestamp must lie within the freshness window, and the token is the
request's one-time credential ("cache the token and refuse reuse", the same page): the ingest
refuses a token seen before with another body (`replay_token_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from mailstream.connectors.base import (
    HUMAN_AGENT,
    MAX_CREDENTIAL_CHARS,
    PROXY_AGENT,
    Item,
    Sample,
    SampleKind,
    WebhookProvider,
    checked_credential,
    classified_failure,
    clean_address,
    clean_message_id,
    decode_items,
    deterministic_event_id,
    epoch_ms,
    first_secret,
    fresh_seconds,
    get_id,
    get_object,
    get_str,
    hmac_hex,
    hmac_matches,
    json_type,
    require_mode,
    string_map,
    table_key,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "mailgun"
SIGNATURE_KEY = "signature"
EVENT_DATA_KEY = "event-data"
SIGNED_FIELDS = ("timestamp", "token", "signature")
PARENT_SIGNATURE_KEY = "parent-signature"
TOKEN_CHARS = 50  # "Randomly generated string with length of 50"

# The Events API's event table: accepted ("placed in queue"), rejected ("Mailgun rejected the
# request to send/forward the email": refused by the provider itself), delivered ("accepted
# by the recipient email server"), failed ("could not deliver"; refined by severity and
# reason below), opened, clicked, unsubscribed, complained. stored (an inbound message Mailgun
# stored) and the mailing-list events (list_member_uploaded, list_member_upload_error,
# list_uploaded) are about no sent message: UNKNOWN.
EVENT_TYPES: dict[str, EventType] = {
    "accepted": EventType.QUEUED,
    "rejected": EventType.REJECTED,
    "delivered": EventType.DELIVERED,
    "failed": EventType.BOUNCED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "complained": EventType.COMPLAINED,
}

# Failures: `severity` "temporary" (a soft bounce Mailgun retries: DEFERRED, SOFT whatever the
# reply) or "permanent" ("Hard bounces ... Mailgun stops attempting delivery", the user
# manual's Tracking Bounces). A permanent bounce gets no class of its own: Mailgun's permanent
# failures include policy refusals (the failed sample is "550 Relay Not Permitted"), so the
# classifier weighs the delivery status.
TEMPORARY_SEVERITY = "temporary"
# `reason`s that decide on their own (the user manual's Tracking Failures; the suppress-*
# reasons as Mailgun's failed events spell them). Mailgun did not attempt delivery to an
# address on its own suppression lists: REJECTED (as resend.py treats provider suppression),
# classified by the list alone: Mailgun's note ("Not delivering to previously bounced
# address") is no server's answer, and "marked your messages as spam" would read as a spam
# block. suppress-bounce: the bounce list holds hard bounces only ("These addresses are added
# to the table in the Bounces tab"), so HARD. suppress-complaint / suppress-unsubscribe: the
# address complained or unsubscribed, which says nothing about its mailbox: UNDETERMINED, as
# is hardfail (the older name: "not delivering to an address that previously bounced,
# unsubscribed, or complained", which of them unknown).
SUPPRESSION_REASONS: dict[str, BounceClass] = {
    "suppress-bounce": BounceClass.HARD,
    "suppress-complaint": BounceClass.UNDETERMINED,
    "suppress-unsubscribe": BounceClass.UNDETERMINED,
    "hardfail": BounceClass.UNDETERMINED,
}
# old: "Mailgun tried to deliver the message unsuccessfully for more than 8 hours": EXPIRED.
EXPIRED_REASON = "old"
FAILED_TYPE = "failed"
REJECTED_TYPE = "rejected"


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    data = get_object(item, EVENT_DATA_KEY)
    if data is None:
        raise ParseError(ErrorKind.MISSING_FIELD, f"Mailgun webhook has no {EVENT_DATA_KEY!r}")
    raw_type = get_str(data, "event")
    timestamp = data.get("timestamp")
    if timestamp is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "Mailgun event-data has no timestamp")
    client = get_object(data, "client-info") or {}
    common: dict[str, Any] = {
        "event_type": EVENT_TYPES.get(raw_type or "", EventType.UNKNOWN),
        **_failure_fields(data, raw_type),
    }
    return [
        new_event(
            event_id=get_id(data, "id") or deterministic_event_id(NAME, data),
            provider=NAME,
            recipient=clean_address(get_str(data, "recipient")),
            sender=clean_address(get_str(get_object(data, "envelope") or {}, "sender")),
            message_id=_message_id(data),
            occurred_at=epoch_ms(timestamp, "timestamp"),
            received_at=received_at,
            url=get_str(data, "url"),
            user_agent=get_str(client, "user-agent"),
            ip=get_str(data, "ip"),
            tags=_tags(data),
            **common,
        )
    ]


def message_id_of(item: Item) -> str | None:
    data = item.get(EVENT_DATA_KEY)
    return _message_id(data) if isinstance(data, dict) else None


def replay_token_of(item: Item) -> str | None:
    """The one-time token, a non-empty string: `verify` refuses any other, so every body that
    verifies has a token the ingest can refuse to see again."""
    block = item.get(SIGNATURE_KEY)
    token = block.get("token") if isinstance(block, dict) else None
    return token if isinstance(token, str) and token else None


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """The `signature` object of the body: its timestamp inside the freshness window, and its
    signature (or parent-signature) the HMAC of timestamp + token under a configured key."""
    del headers  # Mailgun signs inside the body and sends no signature header
    require_mode(config, "hmac", NAME)
    block = _signature_block(body)
    signature = checked_credential(
        _signed_text(block, "signature") if block is not None else None,
        "signature.signature",
        f"{SIGNATURE_KEY!r} object in the body",
        config,
        bool(config.secrets),
        NAME,
    )
    if signature is None or block is None:
        return
    token = replay_token_of({SIGNATURE_KEY: block})
    timestamp = _signed_text(block, "timestamp")
    if token is None or timestamp is None:
        raise SignatureError(
            "the signature object needs timestamp, a token (a non-empty string) and signature"
        )
    if len(token) > MAX_CREDENTIAL_CHARS:
        raise SignatureError(f"signature.token is longer than {MAX_CREDENTIAL_CHARS} characters")
    fresh_seconds(timestamp, "signature.timestamp", config, now)
    signed = (timestamp + token).encode()
    matched = hmac_matches(signature, signed, config.secrets)
    parent = _signed_text(block, PARENT_SIGNATURE_KEY)
    if parent is not None:
        matched |= hmac_matches(parent, signed, config.secrets)
    if not matched:
        raise SignatureError("signature.signature does not match: wrong signing key or token")


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    """Mailgun sends no signature headers: `sign_body` signs inside the body."""
    del body, config, now
    return {}


def sign_body(body: bytes, config: ProviderAuth, now: float) -> bytes:
    """The body with the `signature` object Mailgun would add at `now`; the token is derived
    from the timestamp and the body, so a body signed twice in one second is the same."""
    items = decode_items(body)
    if len(items) != 1:
        raise ValueError("a Mailgun webhook is one JSON object: sign one event per body")
    item = items[0]
    timestamp = str(int(now))
    unsigned = {key: value for key, value in item.items() if key != SIGNATURE_KEY}
    seed = timestamp.encode() + orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)
    token = hashlib.sha256(seed).hexdigest()[:TOKEN_CHARS]
    signature = hmac_hex(first_secret(config, NAME), (timestamp + token).encode())
    block = {"timestamp": timestamp, "token": token, "signature": signature}
    return orjson.dumps({SIGNATURE_KEY: block, **unsigned})


def sample_payload(
    event: str, recipient: str, message_id: str, at_ms: int, event_id: str, **details: Any
) -> dict[str, Any]:
    """An unsigned Mailgun webhook in the shape of the documentation's samples; `details` go
    in `event-data`. `sign_body` (`PROVIDER.signed`) adds the signature."""
    return {
        EVENT_DATA_KEY: {
            "event": event,
            "id": event_id,
            "timestamp": at_ms / 1000,
            "recipient": recipient,
            "envelope": {"sender": "postmaster@samples.mailgun.org", "transport": "smtp"},
            "message": {"headers": {"message-id": message_id, "to": recipient}},
            "tags": ["newsletter"],
            "user-variables": {"campaign": "spring"},
            **details,
        }
    }


def sample(event: Sample) -> dict[str, Any] | None:
    temporary = {"severity": TEMPORARY_SEVERITY, "reason": "generic"}
    shapes: dict[SampleKind, tuple[str, dict[str, Any]]] = {
        "delivered": ("delivered", {"delivery-status": {"code": 250, "message": "OK"}}),
        "hard": (
            FAILED_TYPE,
            {
                "severity": "permanent",
                "reason": "bounce",
                "delivery-status": {
                    "code": 550,
                    "message": "5.1.1 The email account that you tried to reach does not exist.",
                },
            },
        ),
        "soft": (
            FAILED_TYPE,
            temporary
            | {"delivery-status": {"code": 452, "message": "4.2.2 The recipient's inbox is full"}},
        ),
        "deferred": (
            FAILED_TYPE,
            temporary
            | {
                "delivery-status": {
                    "code": 450,
                    "message": "Recipient address rejected: Greylisted",
                }
            },
        ),
        "open": ("opened", _engagement(HUMAN_AGENT)),
        "open_machine": ("opened", _engagement(PROXY_AGENT)),
        "click": ("clicked", _engagement(HUMAN_AGENT) | {"url": event.url}),
        "complaint": ("complained", {}),
    }
    if event.kind not in shapes:
        return None  # Mailgun reports no replies
    kind, details = shapes[event.kind]
    return sample_payload(
        kind, event.address, event.message_id, event.at_ms, event.event_id, **details
    )


def _engagement(user_agent: str) -> dict[str, Any]:
    return {
        "ip": "203.0.113.9",
        "geolocation": {"country": "US", "region": "TX", "city": "Austin"},
        "client-info": {"client-type": "browser", "user-agent": user_agent},
    }


PROVIDER = WebhookProvider(
    NAME,
    normalize,
    verify,
    sign,
    message_id_of,
    sample,
    sign_body=sign_body,
    replay_token_of=replay_token_of,
)


# --- Field reading --------------------------------------------------------------------------


def _signature_block(body: bytes) -> Item | None:
    """The body's signature object; None when the body is no JSON object carrying one (the
    request then presents no credential)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    block = document.get(SIGNATURE_KEY) if isinstance(document, dict) else None
    if block is None or isinstance(block, dict):
        return block
    raise SignatureError(f"{SIGNATURE_KEY!r} is {json_type(block)}, expected an object")


def _signed_text(block: Item, key: str) -> str | None:
    """A field of the signature object as text: the timestamp comes as a string in the samples
    and is typed int in the parameter table, so a whole number is accepted too."""
    value = block.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SignatureError(f"signature.{key} is {json_type(value)}, expected a string")


def _message_id(data: Item) -> str | None:
    headers = get_object(get_object(data, "message") or {}, "headers") or {}
    return clean_message_id(get_str(headers, "message-id"))


def _tags(data: Item) -> dict[str, str]:
    """`user-variables` as they are, and each of Mailgun's `tags` (labels without a value) as
    a key with an empty value; a user variable of the same name keeps its value."""
    labels = data.get("tags")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    ):
        raise ParseError(ErrorKind.WRONG_TYPE, "'tags' must be an array of strings")
    return dict.fromkeys(labels or (), "") | string_map(
        data.get("user-variables"), "user-variables"
    )


def _failure_fields(data: Item, raw_type: str | None) -> dict[str, Any]:
    """Failure details: severity and reason decide the event type of a `failed` event and, when
    they tell, its class; the classifier weighs the delivery status for the rest."""
    if raw_type == REJECTED_TYPE:
        reason = get_str(get_object(data, "reject") or {}, "reason")
        return classified_failure(None, None, reason, reason)
    if raw_type != FAILED_TYPE:
        return {}
    severity = get_str(data, "severity")
    reason = get_str(data, "reason")
    status = get_object(data, "delivery-status") or {}
    code = get_id(status, "bounce-code") or get_id(status, "code")
    text = get_str(status, "message") or get_str(status, "description") or None
    category = "/".join(part for part in (severity, reason) if part) or None
    if table_key(reason) in SUPPRESSION_REASONS:
        suppressed = SUPPRESSION_REASONS[table_key(reason)]
        return {"event_type": EventType.REJECTED} | classified_failure(
            suppressed, code, None, category, diagnostic=text
        )
    if table_key(reason) == EXPIRED_REASON:
        event_type, category_class = EventType.BOUNCED, BounceClass.EXPIRED
    elif table_key(severity) == TEMPORARY_SEVERITY:
        event_type, category_class = EventType.DEFERRED, BounceClass.SOFT
    else:
        event_type, category_class = EventType.BOUNCED, None
    return {"event_type": event_type} | classified_failure(category_class, code, text, category)
