"""Postmark webhooks.

Evidence: the webhook pages of https://postmarkapp.com/developer/webhooks/ (bounce-webhook,
delivery-webhook, open-tracking-webhook, click-webhook, spam-complaint-webhook,
subscription-change-webhook) give one sample payload each; the bounce types are listed at
https://postmarkapp.com/developer/api/bounce-api#bounce-types. Quirks, as the samples show them:
every payload names its kind in `RecordType`; the recipient is `Email` in bounces and spam
complaints and `Recipient` everywhere else; each kind has its own timestamp field (ISO 8601
with seven fractional digits and an offset); there is no event id, so the id is derived from
the payload; `Metadata` is an object of the sender's own keys; `ServerID` is a number (an
older sample spells it `ServerId`); the spam-complaint sample carries TypeCode 512 (which the
bounce-type list gives to SpamNotification) next to Type "SpamComplaint", so `Type` is read
before `TypeCode` and RecordType SpamComplaint is a complaint whatever its TypeCode.
Postmark signs nothing: a webhook is authenticated by HTTP basic auth in its URL only
(https://postmarkapp.com/developer/webhooks/webhooks-overview), so the body's integrity rests
on TLS alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailstream.classify import classify_bounce, extract_status
from mailstream.connectors.base import (
    HUMAN_AGENT,
    PROXY_AGENT,
    Item,
    Sample,
    SampleKind,
    WebhookProvider,
    basic_auth_headers,
    clean_address,
    clean_message_id,
    deterministic_event_id,
    epoch_ms,
    get_bool,
    get_id,
    get_object,
    get_str,
    json_type,
    require_mode,
    string_map,
    verify_basic_auth,
)
from mailstream.errors import ErrorKind, ParseError
from mailstream.events import BounceClass, EmailEvent, EventType, format_timestamp_ms, new_event
from mailstream.settings import ProviderAuth

NAME = "postmark"
AUTHORIZATION_HEADER = "Authorization"

# https://postmarkapp.com/developer/webhooks/webhooks-overview: the RecordType of each webhook.
# Bounce is refined by BOUNCE_TYPES; SubscriptionChange by SuppressSending (see normalize).
RECORD_TYPES: dict[str, EventType] = {
    "Delivery": EventType.DELIVERED,
    "Bounce": EventType.BOUNCED,
    "SpamComplaint": EventType.COMPLAINED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "SubscriptionChange": EventType.UNSUBSCRIBED,
}

# https://postmarkapp.com/developer/api/bounce-api#bounce-types: every Type with its TypeCode,
# the canonical event it is and the bounce class Postmark's description supports. A class of
# None leaves the class to the classifier, which reads Details (UNDETERMINED without evidence).
# Types that report no failure of the message (a subscribe request, an auto-reply, an open
# relay probe, an inbound-hook failure) are UNKNOWN: nothing is suppressed for them.
BOUNCE_TYPES: dict[str, tuple[int, EventType, BounceClass | None]] = {
    # "Hard bounce: the server was unable to deliver your message (ex: unknown user, mailbox
    # not found)."
    "HardBounce": (1, EventType.BOUNCED, BounceClass.HARD),
    # "Message delayed: the server could not temporarily deliver your message"; Postmark retries.
    "Transient": (2, EventType.DEFERRED, BounceClass.SOFT),
    # "Unsubscribe request: the server received an unsubscribe request."
    "Unsubscribe": (16, EventType.UNSUBSCRIBED, None),
    # "Subscribe request": not a failure.
    "Subscribe": (32, EventType.UNKNOWN, None),
    # "Auto responder": an automatic answer (out of office); the message was delivered.
    "AutoResponder": (64, EventType.UNKNOWN, None),
    # "Address change: the recipient requested an address change": the mailbox has moved,
    # which classify.py (as Sisimai, "hasmoved") counts HARD.
    "AddressChange": (128, EventType.BOUNCED, BounceClass.HARD),
    # "DNS error: a temporary DNS error."
    "DnsError": (256, EventType.BOUNCED, BounceClass.SOFT),
    # "Spam notification: the message was delivered, but was either blocked by the user, or
    # classified as spam, bulk mail, or had rejected content."
    "SpamNotification": (512, EventType.BOUNCED, BounceClass.BLOCK),
    # "Open relay test": a probe of the sending server, not about this message.
    "OpenRelayTest": (1024, EventType.UNKNOWN, None),
    # "Unknown: unable to classify the bounce"; the classifier reads Details.
    "Unknown": (2048, EventType.BOUNCED, None),
    # "Soft bounce/Undeliverable: unable to temporarily deliver message (i.e. mailbox full,
    # account disabled, exceeds quota, out of disk space)."
    "SoftBounce": (4096, EventType.BOUNCED, BounceClass.SOFT),
    # "Virus notification": the receiving server reports a virus in the message (content).
    "VirusNotification": (8192, EventType.BOUNCED, BounceClass.BLOCK),
    # "Spam challenge verification": held until the sender answers a challenge (recipient-side).
    "ChallengeVerification": (16384, EventType.BOUNCED, BounceClass.SOFT),
    # "Invalid email address."
    "BadEmailAddress": (100000, EventType.BOUNCED, BounceClass.HARD),
    # "Spam complaint: the subscriber explicitly marked this message as spam."
    "SpamComplaint": (100001, EventType.COMPLAINED, None),
    # "Manually deactivated": Postmark refuses to send to the address.
    "ManuallyDeactivated": (100002, EventType.REJECTED, BounceClass.UNDETERMINED),
    # "Registration not confirmed": Postmark refuses to send until the address is confirmed.
    "Unconfirmed": (100003, EventType.REJECTED, BounceClass.UNDETERMINED),
    # "ISP block: blocked from this ISP due to content or blacklisting."
    "Blocked": (100006, EventType.BOUNCED, BounceClass.BLOCK),
    # "SMTP API error": Postmark did not accept the message from the SMTP API; never sent.
    "SMTPApiError": (100007, EventType.REJECTED, BounceClass.UNDETERMINED),
    # "Processing failed: unable to deliver inbound message to destination inbound hook."
    "InboundError": (100008, EventType.UNKNOWN, None),
    # "DMARC policy: email rejected due to DMARC policy."
    "DMARCPolicy": (100009, EventType.BOUNCED, BounceClass.BLOCK),
    # "Template rendering failed": the message was never sent.
    "TemplateRenderingFailed": (100010, EventType.REJECTED, BounceClass.UNDETERMINED),
}
BOUNCE_TYPE_CODES: dict[int, str] = {code: name for name, (code, _, _) in BOUNCE_TYPES.items()}
# Failures that get a bounce_class.
CLASSIFIED_TYPES = frozenset({EventType.BOUNCED, EventType.DEFERRED, EventType.REJECTED})

# Where each RecordType keeps its moment (the webhook pages); the others are tried after it.
TIMESTAMP_KEYS: dict[str, str] = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}
ALL_TIMESTAMP_KEYS = ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt")


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    record_type = get_str(item, "RecordType") or ""
    event_type = RECORD_TYPES.get(record_type, EventType.UNKNOWN)
    category_class: BounceClass | None = None
    category = None
    if record_type == "Bounce":
        category = _bounce_type(item)
        if category is not None:
            _, event_type, category_class = BOUNCE_TYPES[category]
        else:  # a type newer than the list: still a bounce, classified from Details
            category = get_str(item, "Type")
    elif record_type == "SubscriptionChange":
        # SuppressSending false is a reactivation: no canonical type says "may send again",
        # and UNKNOWN suppresses nothing.
        if get_bool(item, "SuppressSending") is not True:
            event_type = EventType.UNKNOWN
        category = get_str(item, "SuppressionReason")
    # Details is what the receiving server said; Description is Postmark's generic text of the
    # bounce type, shown when there is no Details but no evidence for the classifier.
    details = get_str(item, "Details")
    description = get_str(item, "Description")
    bounce_class, bounce_reason = None, None
    if event_type in CLASSIFIED_TYPES:
        bounce_class, bounce_reason = classify_bounce(category_class, None, details)
    geo = get_object(item, "Geo") or {}
    event = new_event(
        event_id=deterministic_event_id(NAME, item),
        provider=NAME,
        event_type=event_type,
        recipient=clean_address(_first_str(item, "Recipient", "Email")),
        sender=clean_address(get_str(item, "From")),
        message_id=message_id_of(item),
        occurred_at=_occurred_at(item, record_type),
        received_at=received_at,
        bounce_class=bounce_class,
        bounce_reason=bounce_reason,
        provider_category=category,
        smtp_status=extract_status(details),
        diagnostic=details or description,
        url=get_str(item, "OriginalLink"),
        user_agent=get_str(item, "UserAgent") or get_str(get_object(item, "Client") or {}, "Name"),
        ip=get_str(geo, "IP"),
        tags=_tags(item),
        tenant=get_id(item, "ServerID") or get_id(item, "ServerId"),
    )
    return [event]


def _bounce_type(item: Item) -> str | None:
    name = get_str(item, "Type")
    if name in BOUNCE_TYPES:
        return name
    code = item.get("TypeCode")
    if code is None:
        return None
    if isinstance(code, bool) or not isinstance(code, int):
        raise ParseError(
            ErrorKind.WRONG_TYPE, f"'TypeCode' is {json_type(code)}, expected a number"
        )
    return BOUNCE_TYPE_CODES.get(code)


def _first_str(item: Item, *keys: str) -> str | None:
    values = [get_str(item, key) for key in keys]  # every key type-checked
    return next((value for value in values if value), None)


def _tags(item: Item) -> dict[str, str]:
    """Metadata, plus Postmark's own Tag and MessageStream (which win over same-named keys)."""
    tags = string_map(item.get("Metadata"), "Metadata")
    for key, name in (("Tag", "tag"), ("MessageStream", "message_stream")):
        value = get_str(item, key)
        if value:
            tags[name] = value
    return tags


def _occurred_at(item: Item, record_type: str) -> int:
    own = TIMESTAMP_KEYS.get(record_type)
    for name in (own, *ALL_TIMESTAMP_KEYS) if own else ALL_TIMESTAMP_KEYS:
        value = item.get(name)
        if value is not None:
            return epoch_ms(value, name)
    raise ParseError(
        ErrorKind.MISSING_FIELD,
        f"Postmark event has none of {', '.join(ALL_TIMESTAMP_KEYS)}",
    )


def message_id_of(item: Item) -> str | None:
    return clean_message_id(get_str(item, "MessageID"))


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """HTTP basic auth with one of `basic_auth` (mode "basic", the only scheme Postmark has)."""
    require_mode(config, "basic", NAME)
    verify_basic_auth(headers, config, NAME)


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    return basic_auth_headers(config, NAME)


def local_auth(directory: Path) -> ProviderAuth:
    return ProviderAuth(mode="basic", basic_auth=(("local", secrets.token_urlsafe(24)),))


# --- Sample payloads ------------------------------------------------------------------------

SAMPLE_BOUNCES: dict[SampleKind, tuple[str, str, str]] = {
    "hard": (
        "HardBounce",
        "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    ),
    "soft": (
        "SoftBounce",
        "Unable to temporarily deliver this email.",
        "smtp;452 4.2.2 The recipient's inbox is out of storage space.",
    ),
    "deferred": (
        "Transient",
        "The server could not temporarily deliver your message.",
        "smtp;421 4.7.0 Try again later",
    ),
}


def sample(event: Sample) -> dict[str, Any] | None:
    """A Postmark webhook in the shape of the documentation's samples (None for replies:
    Postmark reports those through its inbound webhook, not as an event of the message)."""
    at = format_timestamp_ms(event.at_ms)
    payload: dict[str, Any] = {
        "MessageStream": "outbound",
        "MessageID": event.message_id,
        "ServerID": 23,
        "Tag": "spring",
        "Metadata": {"campaign": "spring"},
    }
    if event.kind == "delivered":
        return {"RecordType": "Delivery", **payload, "Recipient": event.address} | {
            "DeliveredAt": at,
            "Details": "smtp;250 2.0.0 OK",
        }
    if event.kind in SAMPLE_BOUNCES:
        name, description, details = SAMPLE_BOUNCES[event.kind]
        return {"RecordType": "Bounce", **payload} | {
            "ID": 4323372036854775807,
            "Type": name,
            "TypeCode": BOUNCE_TYPES[name][0],
            "Description": description,
            "Details": details,
            "Email": event.address,
            "From": "news@example.com",
            "BouncedAt": at,
        }
    if event.kind == "complaint":
        return {"RecordType": "SpamComplaint", **payload} | {
            "ID": 42,
            "Type": "SpamComplaint",
            "TypeCode": 100001,
            "Email": event.address,
            "From": "news@example.com",
            "BouncedAt": at,
        }
    if event.kind in ("open", "open_machine", "click"):
        machine = event.kind == "open_machine"
        reader = {
            "Platform": "WebMail",
            "UserAgent": PROXY_AGENT if machine else HUMAN_AGENT,
            "Geo": {"IP": "66.249.84.1" if machine else "203.0.113.9"},
            "Recipient": event.address,
            "ReceivedAt": at,
        }
        if event.kind == "click":
            return (
                {"RecordType": "Click", **payload, "ClickLocation": "HTML"}
                | reader
                | {"OriginalLink": event.url}
            )
        return {"RecordType": "Open", **payload, "FirstOpen": True} | reader
    return None


PROVIDER = WebhookProvider(
    NAME, normalize, verify, sign, message_id_of, sample, local_auth_of=local_auth
)
