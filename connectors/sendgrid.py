"""SendGrid Event Webhook.

Evidence: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event (formerly
https://sendgrid.com/docs/for-developers/tracking-events/event/, source in the sendgrid/docs
repository, content/docs/for-developers/tracking-events/event.md). Every POST is a JSON array
of flat events: `event` names the kind, `email` the recipient, `timestamp` is unix seconds,
`sg_event_id` "a unique ID to this event that you can use for deduplication purposes",
`sg_message_id` SendGrid's id of the message (missing on asynchronous bounces), `category` a
string or an array "as you sent it", `asm_group_id` the unsubscribe group; the sender's own
custom_args / unique_args are merged into the event as top-level keys. The golden cases
doc_*.json are that page's samples verbatim, as the sendgrid/docs repository has it (commit
02c1275b9154eecde622c5df8e4d5f5251839911; the Twilio-hosted copy has other example values
and a few more fields): doc_<event>.json the "Example webhook response" of each event
(doc_blocked.json the bounce of type "blocked"), doc_all_events.json the opening "example
of each type of event" (its bounce has no `type`), doc_click_unique_args.json the Click example,
doc_marketing_processed.json and doc_ab_test_processed.json the Marketing Campaigns examples,
doc_legacy_unsubscribe.json the Legacy Marketing Email unsubscribe and doc_reserved_keys.json
the reserved-keys example (event "Processed", timestamp as a string).
`sg_machine_open` (boolean, open events only) is documented at
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/understanding-apple-mail-privacy-protection-and-open-events
and `bounce_classification` (bounce events) at
https://www.twilio.com/docs/sendgrid/ui/analytics-and-reporting/bounce-and-block-classifications.

Signatures: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features.
X-Twilio-Email-Event-Webhook-Signature holds the base64 DER ECDSA signature (P-256, SHA-256)
of X-Twilio-Email-Event-Webhook-Timestamp's text followed by the raw body. SendGrid keeps the
private key; the verification key shown in its settings is the base64 DER public key, which
is what `ProviderAuth.secrets` holds here (several while keys are rotated). `sign` needs the
private key, so it reads `ProviderAuth.signing_keys` (base64 DER PKCS#8), which `verify`
never reads.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstream.classify import extract_status
from mailstream.connectors.base import (
    HUMAN_AGENT,
    Item,
    Sample,
    SampleKind,
    WebhookProvider,
    classified_failure,
    clean_address,
    clean_message_id,
    deterministic_event_id,
    epoch_ms,
    fresh_timestamp,
    get_bool,
    get_id,
    get_str,
    presented_credential,
    require_mode,
    string_map,
    table_key,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
SIGNATURE_ALGORITHM = ec.ECDSA(hashes.SHA256())

# The event reference's delivery and engagement events. processed: "received and is ready to
# be delivered" (QUEUED). dropped: SendGrid will not send it (a suppressed or invalid address,
# spam content, an invalid SMTPAPI header, the plan's quota): REJECTED. group_unsubscribe:
# "unsubscribed from a specific group"; mailstream suppresses per recipient, not per group, so
# it suppresses all mail (the safe side of an unsubscribe) and keeps the group in the tags.
# group_resubscribe ("resubscribed to a specific group") has no canonical type: no event says
# "may send again" (only an operator lifts a suppression), so it is UNKNOWN. Account events
# (account_status_change) are UNKNOWN too.
EVENT_TYPES: dict[str, EventType] = {
    "processed": EventType.QUEUED,
    "dropped": EventType.REJECTED,
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "bounce": EventType.BOUNCED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}
# `ip` is "the IP address used to send the email" on delivery events and the recipient's on
# engagement events; the canonical ip is the reader's, so it is read on these only.
ENGAGEMENT_EVENTS = frozenset(
    {"open", "click", "unsubscribe", "group_unsubscribe", "group_resubscribe", "spamreport"}
)

# A bounce's `type` "indicates whether the bounce event was a hard bounce (type=bounce) or
# block (type=blocked)". A block is refused for the message or the sender, not the address:
# BLOCK, whatever the reply. "bounce" only says permanent, not why (a 552 5.2.2 mailbox full
# is one too), so the reply decides, through the classifier.
BLOCKED_TYPE = "blocked"
# bounce-and-block-classifications: SendGrid buckets each reply into seven classifications.
# "Invalid Address ... the recipient's email address is syntactically incorrect or the
# recipient's mailbox does not exist ... often referred to as hard bounces"; Reputation and
# Content are the sender's. Mailbox Unavailable (full, disabled or gone), Technical Failure,
# Frequency or Volume Too High and Unclassified name no single class: the reply decides.
BOUNCE_CLASSIFICATIONS: dict[str, BounceClass] = {
    "invalid address": BounceClass.HARD,
    "reputation": BounceClass.BLOCK,
    "content": BounceClass.BLOCK,
}
# The dropped event's documented reasons. Bounced Address / Invalid: the address is on the
# bounce or invalid-email suppression list (it failed hard before). Spam Content, Invalid
# SMTPAPI header and Recipient List over Package Quota are the sender's to fix. Unsubscribed
# Address and Spam Reporting Address name no delivery failure ("spam" there is the recipient's
# earlier complaint, which the classifier's text rules would misread as content).
DROP_REASONS: dict[str, BounceClass] = {
    "bounced address": BounceClass.HARD,
    "invalid": BounceClass.HARD,
    "spam content": BounceClass.BLOCK,
    "invalid smtpapi header": BounceClass.BLOCK,
    "recipient list over package quota": BounceClass.BLOCK,
    "unsubscribed address": BounceClass.UNDETERMINED,
    "spam reporting address": BounceClass.UNDETERMINED,
}
# deferred: "Receiving server temporarily rejected the message"; SendGrid retries.
DEFERRAL_CLASS = BounceClass.SOFT

# Top-level keys that are SendGrid's own (the event reference's property tables and examples,
# plus every sg_* key); any other key is one of the sender's custom_args and becomes a tag.
# marketing_campaign_* are "displayed as unique arguments" and stay tags.
SENDGRID_KEYS = frozenset(
    {
        "email",
        "timestamp",
        "event",
        "smtp-id",
        "useragent",
        "ip",
        "reason",
        "status",
        "response",
        "attempt",
        "type",
        "bounce_classification",
        "url",
        "url_offset",
        "category",
        "asm_group_id",
        "tls",
        "cert_err",
        "pool",
        "send_at",
        "post_type",
        "newsletter",
    }
)
# sg_message_id is the X-Message-Id the send API returned, then "." and the id of the filter
# server that processed it ("LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-...-18-5F5FC76C-9.0").
# The suffix is cut off so that events join the sending records. It is cut at the segment
# naming the filter rather than at the first ".": older ids have dots of their own
# ("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", whose smtp-id is
# <14c5d75ce93.dfd.64b469@ismtpd-555>).
FILTER_SUFFIX = re.compile(r"\.[^.]*filter")


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    raw_type = (get_str(item, "event") or "").strip().lower()
    event_type = EVENT_TYPES.get(raw_type, EventType.UNKNOWN)
    event = new_event(
        event_id=get_str(item, "sg_event_id") or deterministic_event_id(NAME, item),
        provider=NAME,
        event_type=event_type,
        recipient=clean_address(get_str(item, "email")),
        message_id=message_id_of(item),
        occurred_at=_occurred_at(item),
        received_at=received_at,
        **_failure_fields(item, event_type),
        url=get_str(item, "url") if event_type is EventType.CLICKED else None,
        user_agent=get_str(item, "useragent"),
        ip=get_str(item, "ip") if raw_type in ENGAGEMENT_EVENTS else None,
        tags=_tags(item),
        tenant=get_id(item, "sg_user_id"),
        provider_flagged_machine=get_bool(item, "sg_machine_open") is True,
    )
    return [event]


def message_id_of(item: Item) -> str | None:
    message_id = clean_message_id(get_str(item, "sg_message_id"))
    if message_id is None:
        return None
    suffix = FILTER_SUFFIX.search(message_id)
    if suffix is None:
        return message_id
    return message_id[: suffix.start()] or None


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """The ECDSA signature of timestamp + body under any configured public key, with the
    timestamp (unix seconds) inside the freshness window either way."""
    require_mode(config, "hmac", NAME)  # the default mode: the provider's own signature
    header = config.signature_header or SIGNATURE_HEADER
    signature = presented_credential(headers, header, config, bool(config.secrets), NAME)
    if signature is None:
        return
    timestamp = fresh_timestamp(headers, TIMESTAMP_HEADER, config, now)
    try:
        der_signature = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{header} must be a base64 DER ECDSA signature") from None
    signed = timestamp.encode() + body
    for key in config.secrets:
        try:
            _public_key(key).verify(der_signature, signed, SIGNATURE_ALGORITHM)
        except InvalidSignature:
            continue
        return
    raise SignatureError(f"{header} does not match: wrong verification key or altered body")


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    if not config.signing_keys:
        raise ValueError(
            f"signing a {NAME} request needs a private key in ProviderAuth.signing_keys "
            "(its secrets are the public verification keys)"
        )
    timestamp = str(int(now))
    signature = _private_key(config.signing_keys[0]).sign(
        timestamp.encode() + body, SIGNATURE_ALGORITHM
    )
    return {
        config.signature_header or SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: timestamp,
    }


def local_auth(directory: Path) -> ProviderAuth:
    """A fresh key pair: the public key verifies, the private key signs."""
    signing_key = new_signing_key()
    return ProviderAuth(secrets=(verification_key(signing_key),), signing_keys=(signing_key,))


def new_signing_key() -> str:
    """A fresh P-256 private key as `signing_keys` holds it (tests, the demo)."""
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode()


def verification_key(signing_key: str) -> str:
    """The public key of `signing_key`, as SendGrid shows one (the `secrets` entry)."""
    der = (
        _private_key(signing_key)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


@lru_cache(maxsize=16)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A configured verification key; SignatureError when it is not a P-256 public key (a
    misconfiguration refuses every request rather than passing one unchecked)."""
    refusal = SignatureError(
        f"a configured {NAME} secret is not a base64 ECDSA P-256 public key "
        "(the verification key of SendGrid's Signed Event Webhook settings)"
    )
    try:
        key = serialization.load_der_public_key(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise refusal from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise refusal
    return key


@lru_cache(maxsize=16)
def _private_key(text: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(base64.b64decode(text.strip()), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{NAME} signing_keys must hold base64 DER (PKCS#8) EC private keys")
    return key


# --- Sample payloads ------------------------------------------------------------------------

MPP_AGENT = "Mozilla/5.0"  # what Apple's Mail Privacy Protection proxy presents
SAMPLE_BOUNCES: dict[SampleKind, dict[str, str]] = {
    "hard": {
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
        "type": "bounce",
        "bounce_classification": "Invalid Address",
    },
    "soft": {
        "reason": "552 5.2.2 The email account that you tried to reach is over quota.",
        "status": "5.2.2",
        "type": "bounce",
        "bounce_classification": "Mailbox Unavailable",
    },
}


def sample(event: Sample) -> dict[str, Any] | None:
    """A SendGrid event in the shape of the reference's samples (None for replies, which
    SendGrid reports through Inbound Parse, not as an event of the message)."""
    payload: dict[str, Any] = {
        "email": event.address,
        "timestamp": event.at_ms // 1000,
        "smtp-id": f"<{event.message_id}@ismtpd0001p1iad2.sendgrid.net>",
        "category": ["spring"],
        "sg_event_id": event.event_id,
        "sg_message_id": f"{event.message_id}.filterdrecv-5645d9c87f-6r2ch-1-5F5FC76C-9.0",
        "campaign": "spring",
    }
    reader = {"ip": "203.0.113.9", "useragent": HUMAN_AGENT}
    if event.kind == "delivered":
        return payload | {"event": "delivered", "response": "250 2.0.0 OK"}
    if event.kind in SAMPLE_BOUNCES:
        return payload | {"event": "bounce"} | SAMPLE_BOUNCES[event.kind]
    if event.kind == "deferred":
        return payload | {
            "event": "deferred",
            "response": "421 4.7.0 Try again later",
            "attempt": "1",
        }
    if event.kind in ("open", "open_machine"):
        machine = event.kind == "open_machine"
        opener = {"ip": "17.58.0.1", "useragent": MPP_AGENT} if machine else reader
        return payload | {"event": "open", "sg_machine_open": machine} | opener
    if event.kind == "click":
        return payload | {"event": "click", "url": event.url} | reader
    if event.kind == "complaint":
        return payload | {"event": "spamreport"}
    return None


PROVIDER = WebhookProvider(
    NAME, normalize, verify, sign, message_id_of, sample, local_auth_of=local_auth
)


# --- Field reading --------------------------------------------------------------------------


def _occurred_at(item: Item) -> int:
    value = item.get("timestamp")
    if value is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "SendGrid event has no timestamp")
    return epoch_ms(value, "timestamp")


def _failure_fields(item: Item, event_type: EventType) -> dict[str, Any]:
    """Class, reason, category, status and text of bounces, drops and deferrals; the
    delivered event's `response` (the receiving server's reply) as its diagnostic."""
    status = get_str(item, "status")
    if event_type is EventType.BOUNCED:
        kind = get_str(item, "type")
        classification = get_str(item, "bounce_classification")
        category_class = (
            BounceClass.BLOCK
            if table_key(kind) == BLOCKED_TYPE
            else BOUNCE_CLASSIFICATIONS.get(table_key(classification))
        )
        category = "/".join(part for part in (kind, classification) if part) or None
        return classified_failure(category_class, status, get_str(item, "reason"), category)
    if event_type is EventType.REJECTED:
        reason = get_str(item, "reason")
        drop_class = DROP_REASONS.get(table_key(reason))
        if drop_class is None:  # a reason newer than the list: weighed as text
            return classified_failure(None, status, reason, reason)
        # A documented reason is SendGrid's own label, not a server's reply: its class
        # stands, and it names no cause for the classifier to read ("Spam Reporting").
        return classified_failure(drop_class, status, None, reason) | {"diagnostic": reason}
    response = get_str(item, "response")
    if event_type is EventType.DEFERRED:
        return classified_failure(DEFERRAL_CLASS, status, response, None)
    return {
        "smtp_status": extract_status(status) or extract_status(response),
        "diagnostic": response,
    }


def _tags(item: Item) -> dict[str, str]:
    """The sender's custom_args, then each category as a bare label and asm_group_id (SendGrid's
    own win over same-named custom args)."""
    custom_args = {
        key: value
        for key, value in item.items()
        if key not in SENDGRID_KEYS and not key.startswith("sg_")
    }
    tags = string_map(custom_args, "custom_args")
    tags.update(dict.fromkeys(_categories(item.get("category")), ""))
    group = get_id(item, "asm_group_id")
    if group is not None:
        tags["asm_group_id"] = group
    return tags


def _categories(value: Any) -> list[str]:
    """`category`: "If you send single categories as an array, they will be returned by the
    webhook as an array. If you send single categories as a string, ... as a string"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(category, str) for category in value):
        return value
    raise ParseError(ErrorKind.WRONG_TYPE, "'category' must be a string or an array of strings")
