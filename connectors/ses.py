"""Amazon SES event publishing and feedback notifications, delivered by Amazon SNS over HTTPS.

Evidence. The body is an SNS message
(https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html): `Type` is
Notification, SubscriptionConfirmation or UnsubscribeConfirmation; a Notification's `Message`
is a string holding the SES record as JSON. SES writes two record shapes that differ only in
the name of the type key: event publishing `eventType`
(https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html,
examples at .../event-publishing-retrieving-sns-examples.html) and feedback notifications
`notificationType` (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html,
examples at .../notification-examples.html). Both have `mail` {timestamp, messageId, source,
sendingAccountId, destination, tags (event publishing only: name -> array of values)} and one
object of details per type, holding the event's own `timestamp`. The golden doc_* payloads are
those examples verbatim (the pages' sources, awsdocs/amazon-ses-developer-guide), compacted as
the Message of an SNS envelope of our own, since the SES pages show only the Message.

Recipients: one canonical event per address of the details' recipient list
(bounce.bouncedRecipients, complaint.complainedRecipients, delivery.recipients,
deliveryDelay.delayedRecipients), of mail.destination for the other types; the event id gets
"/<address>" when there are several. SES tracks one pixel and one link set per message, so an
open or a click of a message to several addresses gives one event with no recipient.

Signatures: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html.
`Signature` is the base64 RSA signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA)
of "Key\\nvalue\\n" for the documented keys in byte order, which differ by Type (SIGNED_KEYS).
The certificate is one of `sns_certificate_files`, or (`sns_fetch_certificates`) the one at
`SigningCertURL`, only from https://sns.<region>.amazonaws.com/...pem. AWS signs every
account's topics, so only `sns_topic_arns` are accepted, and the signed `Timestamp` must be
no older than SNS's retries last (an hour, SNS_RETRY_SECONDS) plus `max_age_seconds`. The
signature is in the body: `sign_body` (tests, the demo) writes it with `signing_keys[0]`,
`sign` only gives the headers SNS sends with it, and `local_auth` makes a key and a self-signed
certificate to trust in place of SNS's.

Subscriptions: a confirmation gives no canonical event. `subscription_confirmation_url` gives
the SubscribeURL of a verified SubscriptionConfirmation of an accepted topic, and
`confirm_subscription` visits it; `subscription_request` tells the ingest, which logs the URL
and visits it only with `sns_confirm_subscriptions` and a signed request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import http.client
import re
import threading
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailstream.classify import classify_bounce, extract_status
from mailstream.connectors.base import (
    HUMAN_AGENT,
    MAX_CREDENTIAL_CHARS,
    Item,
    Sample,
    SampleKind,
    SubscriptionRequest,
    WebhookProvider,
    clean_address,
    clean_message_id,
    decode_items,
    deterministic_event_id,
    epoch_ms,
    get_id,
    get_object,
    get_str,
    json_type,
    require_mode,
    string_map,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, format_timestamp_ms, new_event
from mailstream.settings import ProviderAuth

NAME = "ses"
NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html: the keys of
# the string to sign, in byte order; Subject only when the message has one.
_CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SIGNED_KEYS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_KEYS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_KEYS,
}
OPTIONAL_SIGNED_KEYS = frozenset({"Subject"})
# Same page: SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA.
SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
SIGNING_VERSION = "2"
# The hosts SNS serves its certificates and confirmation links from: sns.<region>.amazonaws.com
# of the standard and GovCloud partitions, a region being e.g. us-east-1 or us-gov-west-1 (a
# looser pattern would take sns.s3.amazonaws.com, which is an S3 bucket named "sns"), and the
# names SNS gives its signing certificates.
SNS_HOST = re.compile(r"sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]\.amazonaws\.com")
CERTIFICATE_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]+\.pem")
# https://docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html: "The total
# policy retry time for an HTTP/S endpoint cannot be greater than 3,600 seconds". A retry keeps
# the message's signed Timestamp, so a message is fresh for that long (plus the clock skew of
# `max_age_seconds`): refusing a retried bounce would lose it.
SNS_RETRY_SECONDS = 3600
MAX_CONCURRENT_FETCHES = 2  # certificate fetches block a thread each: bound them
FETCH_TIMEOUT_SECONDS = 5.0
MAX_FETCH_BYTES = 64 * 1024  # a PEM certificate is ~2 KB, a confirmation answer less
CERTIFICATE_CACHE_SIZE = 64

# SES publishes these texts, not records, when a topic is set up: nothing happened to mail.
# Event publishing: the Message of the first Notification of a new event destination
# (django-anymail's amazon_ses webhook skips it the same way). Feedback notifications: the
# notificationType AmazonSnsSubscriptionSucceeded, sent when a topic is attached to an identity.
SETUP_MESSAGE = "Successfully validated SNS topic for Amazon SES event publishing."
SETUP_NOTIFICATION_TYPES = frozenset({"AmazonSnsSubscriptionSucceeded"})

# event-publishing-retrieving-sns-contents.html, "Top-level JSON object": the type names and
# the key of each type's details. Send: "the send request was successful and Amazon SES will
# attempt to deliver the message" (accepted, not yet handed over: QUEUED). Reject: SES found
# a virus and did not send. Rendering Failure: a template could not be rendered, nothing was
# sent (REJECTED). Subscription: a contact changed its list-management preferences
# (UNSUBSCRIBED only when it opted out of something, see _unsubscribed).
EVENT_TYPES: dict[str, EventType] = {
    "Send": EventType.QUEUED,
    "Delivery": EventType.DELIVERED,
    "DeliveryDelay": EventType.DEFERRED,
    "Bounce": EventType.BOUNCED,
    "Reject": EventType.REJECTED,
    "Rendering Failure": EventType.REJECTED,
    "Complaint": EventType.COMPLAINED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "Subscription": EventType.UNSUBSCRIBED,
}
# https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html, complaint types (RFC
# 5965 feedback types): not-spam "Indicates that the entity providing the report does not
# consider the message to be spam. This may be used to correct a message that was incorrectly
# tagged or categorized as spam": no complaint, UNKNOWN.
NOT_SPAM = "not-spam"
DETAIL_KEYS: dict[str, str] = {
    "Send": "send",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Bounce": "bounce",
    "Reject": "reject",
    "Rendering Failure": "failure",
    "Complaint": "complaint",
    "Open": "open",
    "Click": "click",
    "Subscription": "subscription",
}
# The details' own recipient lists: objects with emailAddress, or (delivery) plain strings.
RECIPIENT_LISTS: dict[str, str] = {
    "Bounce": "bouncedRecipients",
    "Complaint": "complainedRecipients",
    "Delivery": "recipients",
    "DeliveryDelay": "delayedRecipients",
}
ENGAGEMENT_TYPES = frozenset({"Open", "Click"})

# Same page, "Bounce types": the type decides unless the subtype is listed with a class of its
# own. Permanent General/NoEmail: "remove the recipient's email address" (HARD). Transient:
# "you may be able to successfully send to this recipient in the future" (SOFT), MailboxFull
# and MessageTooLarge included; ContentRejected / AttachmentRejected: "if you change the
# content" (the sender's problem, BLOCK). Undetermined: "unable to determine a specific bounce
# reason", so the classifier weighs the diagnostic.
BOUNCE_TYPES: dict[str, BounceClass | None] = {
    "Permanent": BounceClass.HARD,
    "Transient": BounceClass.SOFT,
    "Undetermined": None,
}
BOUNCE_SUBTYPES: dict[str, BounceClass | None] = {
    "General": None,
    "NoEmail": BounceClass.HARD,
    "MailboxFull": BounceClass.SOFT,
    "MessageTooLarge": BounceClass.SOFT,
    "ContentRejected": BounceClass.BLOCK,
    "AttachmentRejected": BounceClass.BLOCK,
    "Undetermined": None,
}
# Permanent Suppressed / OnAccountSuppressionList: SES did not attempt delivery (REJECTED).
# Suppressed: "a recent history of bouncing as an invalid address" (HARD).
# OnAccountSuppressionList: the account's own list, which may hold an address for any reason
# and "does not count toward your bounce rate": no class, the classifier weighs the text.
SUPPRESSION_SUBTYPES: dict[str, BounceClass | None] = {
    "Suppressed": BounceClass.HARD,
    "OnAccountSuppressionList": None,
}
# "Complaint subtypes": OnAccountSuppressionList means SES "accepted the message, but didn't
# attempt to send it": no complaint about this message, a refusal by SES (REJECTED).
COMPLAINT_SUPPRESSION_SUBTYPE = "OnAccountSuppressionList"
# DeliveryDelay delayType (same page, "DeliveryDelay object"): SES retries, so SOFT, except
# SpamDetected ("a large amount of unsolicited email from your account") and IPFailure ("the
# IP address that's sending the message is being blocked or throttled"), the sender's
# problem (BLOCK). Undetermined: the classifier weighs the diagnostic.
DELAY_TYPES: dict[str, BounceClass | None] = {
    "InternalFailure": BounceClass.SOFT,
    "General": BounceClass.SOFT,
    "MailboxFull": BounceClass.SOFT,
    "SpamDetected": BounceClass.BLOCK,
    "RecipientServerError": BounceClass.SOFT,
    "IPFailure": BounceClass.BLOCK,
    "TransientCommunicationFailure": BounceClass.SOFT,
    "BYOIPHostNameLookupUnavailable": BounceClass.SOFT,
    "Undetermined": None,
    "SendingDeferral": BounceClass.SOFT,
}
# Reject: "the only possible value is Bad content", a virus in the message; Rendering
# Failure: the template or its data is wrong. Both the sender's to fix.
REFUSAL_CLASS = BounceClass.BLOCK
OPT_OUT = "OptOut"

# The topic of `sample` and `local_auth` (the demo's), and the region of a SigningCertURL
# `sign_body` writes for a TopicArn that names none.
SAMPLE_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"
DEFAULT_REGION = "us-east-1"


# --- Parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Recipient:
    address: str | None
    status: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a record's type adds to its events: field overrides, and whether (and with which
    class of SES's own) the classifier weighs each recipient's status and diagnostic. A
    suppression's status is SES's own 5.1.1, not a receiving server's: only its text counts."""

    fields: dict[str, Any] = field(default_factory=dict)
    classified: bool = False
    category_class: BounceClass | None = None
    status_is_evidence: bool = True


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    record = ses_record(item)
    if record is None:
        return []
    raw_type = _record_type(record)
    if raw_type in SETUP_NOTIFICATION_TYPES:
        return []
    event_type = EVENT_TYPES.get(raw_type or "", EventType.UNKNOWN)
    detail_key = DETAIL_KEYS.get(raw_type or "")
    details = (get_object(record, detail_key) if detail_key else None) or {}
    mail = get_object(record, "mail") or {}
    if raw_type == "Subscription" and not _unsubscribed(details):
        event_type = EventType.UNKNOWN  # a preference change that opts out of nothing
    outcome = _outcome(raw_type, details)
    common: dict[str, Any] = {
        "provider": NAME,
        "event_type": event_type,
        "sender": clean_address(get_str(mail, "source")),
        "message_id": clean_message_id(get_str(mail, "messageId")),
        "occurred_at": _occurred_at(details, detail_key, mail),
        "received_at": received_at,
        "url": get_str(details, "link"),
        "user_agent": get_str(details, "userAgent"),
        "ip": get_str(details, "ipAddress"),
        "tags": _tags(mail),
        "tenant": get_id(mail, "sendingAccountId"),
        **outcome.fields,
    }
    recipients = _recipients(raw_type, details, mail)
    if len(recipients) > 1 and raw_type in ENGAGEMENT_TYPES:
        recipients = [_Recipient(None)]
    event_id = deterministic_event_id(NAME, record)
    if len(recipients) == 1:
        return [_event(event_id, common, outcome, recipients[0])]
    return [
        _event(f"{event_id}/{recipient.address}", common, outcome, recipient)
        for recipient in recipients
    ]


def ses_record(envelope: Item) -> Item | None:
    """The SES record of an SNS Notification; None for a subscription or unsubscribe
    confirmation and for SES's set-up notice. Raises ParseError for anything else."""
    sns_type = get_str(envelope, "Type")
    if sns_type in (SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION):
        return None
    if sns_type is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "SNS message has no Type")
    if sns_type != NOTIFICATION:
        raise ParseError(ErrorKind.INVALID_VALUE, f"SNS message Type {sns_type[:40]!r} is unknown")
    message = get_str(envelope, "Message")
    if message is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "SNS Notification has no Message")
    if message == SETUP_MESSAGE:
        return None
    # The body's limit bounds the Message's size, orjson's recursion limit its depth.
    try:
        record = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise ParseError(ErrorKind.INVALID_VALUE, f"SNS Message is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ParseError(
            ErrorKind.WRONG_TYPE, f"SNS Message is {json_type(record)}, expected an object"
        )
    return record


def message_id_of(item: Item) -> str | None:
    record = ses_record(item)
    mail = record.get("mail") if record is not None else None
    return clean_message_id(get_str(mail, "messageId")) if isinstance(mail, dict) else None


def _record_type(record: Item) -> str | None:
    event_type = get_str(record, "eventType")
    notification_type = get_str(record, "notificationType")  # both type-checked
    return event_type or notification_type


def _event(
    event_id: str, common: Mapping[str, Any], outcome: _Outcome, recipient: _Recipient
) -> EmailEvent:
    fields = dict(common, tags=dict(common["tags"]))
    if outcome.classified:
        status, diagnostic = recipient.status, recipient.diagnostic or common.get("diagnostic")
        evidence = status if outcome.status_is_evidence else None
        bounce_class, bounce_reason = classify_bounce(outcome.category_class, evidence, diagnostic)
        fields |= {
            "bounce_class": bounce_class,
            "bounce_reason": bounce_reason,
            "smtp_status": extract_status(status) or extract_status(diagnostic),
            "diagnostic": diagnostic,
        }
    return new_event(event_id=event_id, recipient=recipient.address, **fields)


def _outcome(raw_type: str | None, details: Item) -> _Outcome:
    if raw_type == "Bounce":
        kind, subtype = get_str(details, "bounceType"), get_str(details, "bounceSubType")
        category = "/".join(part for part in (kind, subtype) if part) or None
        fields: dict[str, Any] = {"provider_category": category}
        if kind == "Permanent" and subtype in SUPPRESSION_SUBTYPES:
            fields["event_type"] = EventType.REJECTED
            return _Outcome(fields, True, SUPPRESSION_SUBTYPES[subtype], status_is_evidence=False)
        category_class = BOUNCE_SUBTYPES.get(subtype or "") or BOUNCE_TYPES.get(kind or "")
        return _Outcome(fields, True, category_class)
    if raw_type == "DeliveryDelay":
        delay = get_str(details, "delayType")
        return _Outcome({"provider_category": delay}, True, DELAY_TYPES.get(delay or ""))
    if raw_type == "Complaint":
        feedback = get_str(details, "complaintFeedbackType")
        if get_str(details, "complaintSubType") == COMPLAINT_SUPPRESSION_SUBTYPE:
            fields = {
                "event_type": EventType.REJECTED,
                "provider_category": f"Complaint/{COMPLAINT_SUPPRESSION_SUBTYPE}",
            }
            return _Outcome(fields, True)
        if feedback == NOT_SPAM:
            return _Outcome({"event_type": EventType.UNKNOWN, "provider_category": feedback})
        return _Outcome({"provider_category": feedback})
    if raw_type == "Reject":
        reason = get_str(details, "reason")
        return _Outcome({"provider_category": reason, "diagnostic": reason}, True, REFUSAL_CLASS)
    if raw_type == "Rendering Failure":
        message = get_str(details, "errorMessage")
        fields = {"provider_category": raw_type, "diagnostic": message}
        return _Outcome(fields, True, REFUSAL_CLASS)
    if raw_type == "Delivery":
        response = get_str(details, "smtpResponse")
        return _Outcome({"smtp_status": extract_status(response), "diagnostic": response})
    return _Outcome()


def _occurred_at(details: Item, detail_key: str | None, mail: Item) -> int:
    """The event's own time (its details' timestamp), else the time SES accepted the mail."""
    for source, key in ((details, f"{detail_key}.timestamp"), (mail, "mail.timestamp")):
        value = source.get("timestamp")
        if value is not None:
            return epoch_ms(value, key)
    raise ParseError(ErrorKind.MISSING_FIELD, "SES record has no timestamp (details or mail)")


def _recipients(raw_type: str | None, details: Item, mail: Item) -> list[_Recipient]:
    """The recipients the event is about, each address once; one unknown recipient when none
    is named. Types with a recipient list of their own never fall back to mail.destination
    (a bounce of one address is not a bounce of every addressee)."""
    list_key = RECIPIENT_LISTS.get(raw_type or "")
    source, key = (details, list_key) if list_key else (mail, "destination")
    found: dict[str, _Recipient] = {}
    for entry in _list(source, key):
        recipient = _recipient(entry, key)
        if recipient.address is not None:
            found.setdefault(recipient.address, recipient)
    return list(found.values()) or [_Recipient(None)]


def _recipient(entry: Any, key: str) -> _Recipient:
    if entry is None or isinstance(entry, str):
        return _Recipient(clean_address(entry))
    if not isinstance(entry, dict):
        raise ParseError(
            ErrorKind.WRONG_TYPE,
            f"a {key!r} entry is {json_type(entry)}, expected an address or an object",
        )
    return _Recipient(
        clean_address(get_str(entry, "emailAddress")),
        get_str(entry, "status"),
        get_str(entry, "diagnosticCode"),
    )


def _list(item: Item, key: str) -> list[Any]:
    value = item.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected an array")


def _tags(mail: Item) -> dict[str, str]:
    """mail.tags maps each name to an array of values: one value is kept as itself, several
    as their JSON array text."""
    tags = get_object(mail, "tags") or {}
    single = {
        name: values[0] if isinstance(values, list) and len(values) == 1 else values
        for name, values in tags.items()
    }
    return string_map(single, "tags")


def _unsubscribed(subscription: Item) -> bool:
    """Whether a Subscription event opts out: of everything, or of a topic it was not already
    opted out of (newTopicPreferences against oldTopicPreferences)."""
    new = get_object(subscription, "newTopicPreferences") or {}
    if new.get("unsubscribeAll") is True:
        return True
    old = get_object(subscription, "oldTopicPreferences") or {}
    opted_out_before = set(_opted_out_topics(old))
    return any(topic not in opted_out_before for topic in _opted_out_topics(new))


def _opted_out_topics(preferences: Item) -> list[str | None]:
    statuses = _list(preferences, "topicSubscriptionStatus")
    if not all(isinstance(status, dict) for status in statuses):
        raise ParseError(ErrorKind.WRONG_TYPE, "'topicSubscriptionStatus' entries must be objects")
    return [
        get_str(status, "topicName")
        for status in statuses
        if get_str(status, "subscriptionStatus") == OPT_OUT
    ]


# --- Signatures -----------------------------------------------------------------------------

CertificateFetcher = Callable[[str], bytes]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would lead past the host check: a 3xx answer is an error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def is_sns_url(url: str) -> bool:
    """An https URL on an SNS host (sns.<region>.amazonaws.com), with no user, port or other
    host trick: the only place a signing certificate or a confirmation link comes from."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and SNS_HOST.fullmatch(parts.netloc) is not None


def fetch_https(url: str) -> bytes:
    """GET an SNS URL (`is_sns_url`, no redirects) within FETCH_TIMEOUT_SECONDS, at most
    MAX_FETCH_BYTES. Raises ValueError for another URL or a larger answer, OSError when the
    request fails."""
    if not is_sns_url(url):
        raise ValueError(f"{url[:100]!r} is not an https://sns.<region>.amazonaws.com URL")
    with _OPENER.open(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
        content: bytes = response.read(MAX_FETCH_BYTES + 1)
    if len(content) > MAX_FETCH_BYTES:
        raise ValueError(f"{url[:100]!r} answered more than {MAX_FETCH_BYTES} bytes")
    return content


@functools.lru_cache(maxsize=CERTIFICATE_CACHE_SIZE)
def fetch_certificate(url: str) -> bytes:
    """`fetch_https`, remembered: SNS signs with one certificate for months. Failures are not
    remembered."""
    return fetch_https(url)


def _checks_signatures(config: ProviderAuth) -> bool:
    return bool(config.sns_certificate_files or config.sns_fetch_certificates)


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    verify_message(body, config, now)


def verify_message(
    body: bytes,
    config: ProviderAuth,
    now: float,
    fetch: CertificateFetcher = fetch_certificate,
) -> None:
    """Raises SignatureError unless `body` is an SNS message signed with a trusted certificate
    (`sns_certificate_files`, or with `sns_fetch_certificates` the one `fetch` gets from its
    SigningCertURL), of one of `sns_topic_arns`, with its Timestamp inside SNS's retry window.
    Passes a message without Signature only when `allow_unsigned`."""
    require_mode(config, "hmac", NAME)
    if not _checks_signatures(config):
        if config.allow_unsigned:
            return
        raise SignatureError(
            f"no secret configured for {NAME}: configure sns_certificate_files or "
            "sns_fetch_certificates (or allow_unsigned, for local testing only)"
        )
    message = _single_message(body)
    encoded = message.get("Signature")
    if encoded is None:
        if config.allow_unsigned:
            return
        raise SignatureError("missing Signature: not a message SNS signed")
    if not config.sns_topic_arns:
        raise SignatureError(
            "no sns_topic_arns configured: AWS signs the topics of every account, so the "
            "accepted topics must be named"
        )
    signature = _decoded_signature(encoded)
    version = message.get("SignatureVersion")
    algorithm = SIGNATURE_HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise SignatureError("SignatureVersion must be 1 (SHA1withRSA) or 2 (SHA256withRSA)")
    signed = string_to_sign(message)
    if message["TopicArn"] not in config.sns_topic_arns:
        raise SignatureError(f"TopicArn {str(message['TopicArn'])[:200]!r} is not accepted")
    _require_fresh(message["Timestamp"], config, now)
    for certificate in _trusted_certificates(config.sns_certificate_files):
        if _signature_matches(certificate, signature, signed, algorithm()):
            _require_valid(certificate, now)
            return
    if config.sns_fetch_certificates:
        certificate = _fetched_certificate(message.get("SigningCertURL"), fetch)
        if _signature_matches(certificate, signature, signed, algorithm()):
            _require_valid(certificate, now)
            return
    raise SignatureError(
        "Signature does not match: not signed with a trusted SNS certificate, or altered"
    )


def string_to_sign(message: Item) -> bytes:
    """The documented "Key\\nvalue\\n" pairs of the message's Type; SignatureError when one
    is missing or not a string."""
    sns_type = message.get("Type")
    keys = SIGNED_KEYS.get(sns_type) if isinstance(sns_type, str) else None
    if keys is None:
        raise SignatureError(
            "Type must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation"
        )
    lines: list[str] = []
    for key in keys:
        value = message.get(key)
        if value is None and key in OPTIONAL_SIGNED_KEYS:
            continue
        if not isinstance(value, str):
            raise SignatureError(f"signed field {key} is {json_type(value)}, expected a string")
        lines += (key, value)
    return "".join(line + "\n" for line in lines).encode()


def _single_message(body: bytes) -> Item:
    try:
        items = decode_items(body)
    except ParseError as exc:
        raise SignatureError(f"body is not an SNS message: {exc.message}") from None
    if len(items) != 1 or not body.lstrip().startswith(b"{"):
        raise SignatureError("body is not an SNS message: SNS posts one JSON object")
    return items[0]


def _decoded_signature(encoded: Any) -> bytes:
    if not isinstance(encoded, str) or len(encoded) > MAX_CREDENTIAL_CHARS:
        raise SignatureError(f"Signature must be base64 of at most {MAX_CREDENTIAL_CHARS} chars")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Signature is not base64") from None


def _require_fresh(timestamp: Any, config: ProviderAuth, now: float) -> None:
    try:
        sent_ms = epoch_ms(timestamp, "Timestamp")
    except ParseError as exc:
        raise SignatureError(exc.message) from None
    age = now - sent_ms / 1000
    oldest = SNS_RETRY_SECONDS + config.max_age_seconds
    if age > oldest or age < -config.max_age_seconds:
        raise SignatureError(
            f"Timestamp is {age:.0f} s from now, outside the window of {oldest} s back (SNS's "
            f"retries and the clock skew) and {config.max_age_seconds} s ahead: a replay, or a "
            "clock is off"
        )


@functools.lru_cache(maxsize=16)
def _trusted_certificates(paths: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    """The certificates of the PEM files, read once per set of paths."""
    certificates: list[x509.Certificate] = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                certificates += x509.load_pem_x509_certificates(file.read())
        except (OSError, ValueError) as exc:
            raise SignatureError(
                f"trusted SNS certificate {path!r} cannot be read: {exc}"
            ) from None
    return tuple(certificates)


def _fetched_certificate(url: Any, fetch: CertificateFetcher) -> x509.Certificate:
    if not (isinstance(url, str) and is_sns_url(url) and _is_pem_path(url)):
        raise SignatureError("SigningCertURL must be https://sns.<region>.amazonaws.com/<name>.pem")
    if not _FETCHES.acquire(blocking=False):
        raise SignatureError("too many SNS certificate fetches in progress: retry later")
    try:
        return x509.load_pem_x509_certificate(fetch(url))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise SignatureError(f"SigningCertURL gave no certificate: {exc}") from None
    finally:
        _FETCHES.release()


_FETCHES = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)


def _is_pem_path(url: str) -> bool:
    parts = urlsplit(url)
    return bool(CERTIFICATE_PATH.fullmatch(parts.path)) and not parts.query and not parts.fragment


def _signature_matches(
    certificate: x509.Certificate, signature: bytes, signed: bytes, algorithm: hashes.HashAlgorithm
) -> bool:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


def _require_valid(certificate: x509.Certificate, now: float) -> None:
    moment = datetime.fromtimestamp(now, UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureError(
            "signed with a certificate valid only from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}"
        )


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    """The headers SNS sends with a message. The signature is in the body (`sign_body`
    writes it): no header makes an unsigned body pass, so one is refused (ValueError)."""
    message = _single_message(body)
    if "Signature" not in message:
        raise ValueError("an SNS message carries its signature in the body: use sign_body")
    return {
        f"x-amz-sns-{name}": str(message.get(key))
        for name, key in (
            ("message-type", "Type"),
            ("message-id", "MessageId"),
            ("topic-arn", "TopicArn"),
        )
    }


def sign_body(body: bytes, config: ProviderAuth, now: float) -> bytes:
    """`body` (one SNS message) as SNS would post it at `now`: Timestamp, SignatureVersion 2,
    a SigningCertURL naming the key, and the Signature made with the RSA private key (PEM) of
    `config.signing_keys[0]`. For tests and the demo; the certificate `verify` must trust is
    one of that key, in `sns_certificate_files`."""
    if not config.signing_keys:
        raise ValueError("signing an SNS message needs an RSA private key in signing_keys")
    key = serialization.load_pem_private_key(config.signing_keys[0].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("SNS signs with RSA: signing_keys[0] must be an RSA private key")
    message = dict(_single_message(body))
    message["Timestamp"] = format_timestamp_ms(round(now * 1000))
    message["SignatureVersion"] = SIGNING_VERSION
    message["SigningCertURL"] = _certificate_url(key.public_key(), message.get("TopicArn"))
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return orjson.dumps(message)


def _certificate_url(key: rsa.RSAPublicKey, topic_arn: Any) -> str:
    """Where SNS would serve the certificate: named after the key, in the topic's region."""
    parts = topic_arn.split(":") if isinstance(topic_arn, str) else []
    region = (
        parts[3] if len(parts) == 6 and re.fullmatch(r"[a-z0-9-]+", parts[3]) else DEFAULT_REGION
    )
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest()[:32]
    return f"https://sns.{region}.amazonaws.com/SimpleNotificationService-{digest}.pem"


# --- Subscriptions --------------------------------------------------------------------------


def subscription_confirmation_url(body: bytes, config: ProviderAuth) -> str | None:
    """The SubscribeURL to visit for a SubscriptionConfirmation of one of `sns_topic_arns`
    (call it once `verify` passed); None for any other body, or a URL not on an SNS host."""
    try:
        message = _single_message(body)
    except SignatureError:
        return None
    if message.get("Type") != SUBSCRIPTION_CONFIRMATION:
        return None
    if message.get("TopicArn") not in config.sns_topic_arns:
        return None
    url = message.get("SubscribeURL")
    return url if isinstance(url, str) and is_sns_url(url) else None


def subscription_request(body: bytes, config: ProviderAuth) -> SubscriptionRequest | None:
    """What the ingest does with a verified SubscriptionConfirmation: visit its SubscribeURL
    when `sns_confirm_subscriptions` allows it and the request was signed (`allow_unsigned`
    lets unsigned ones through `verify`, and nobody unsigned may subscribe us)."""
    url = subscription_confirmation_url(body, config)
    if url is None:
        return None
    signed = _checks_signatures(config) and "Signature" in _single_message(body)
    confirm = config.sns_confirm_subscriptions and signed
    return SubscriptionRequest(
        url, functools.partial(confirm_subscription, url) if confirm else None
    )


def confirm_subscription(url: str, fetch: CertificateFetcher = fetch_https) -> None:
    """Confirm a subscription: GET its SubscribeURL (an SNS URL only). Raises ValueError for
    another URL, OSError when SNS does not answer 200."""
    if not is_sns_url(url):
        raise ValueError(f"{url[:100]!r} is not an https://sns.<region>.amazonaws.com URL")
    fetch(url)


# --- Sample payloads ------------------------------------------------------------------------


def sample_envelope(record: Mapping[str, Any], message_id: str, at_ms: int) -> dict[str, Any]:
    """An unsigned SNS Notification of `record` on SAMPLE_TOPIC_ARN (`sign_body` signs it)."""
    return {
        "Type": NOTIFICATION,
        "MessageId": message_id,
        "TopicArn": SAMPLE_TOPIC_ARN,
        "Message": orjson.dumps(record).decode(),
        "Timestamp": format_timestamp_ms(at_ms),
    }


def _sample_details(event: Sample) -> tuple[str, dict[str, Any]] | None:
    address = event.address
    shapes: dict[SampleKind, tuple[str, dict[str, Any]]] = {
        "delivered": (
            "Delivery",
            {
                "recipients": [address],
                "smtpResponse": "250 2.6.0 Message received",
                "processingTimeMillis": 1200,
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
        ),
        "hard": (
            "Bounce",
            _sample_bounce("Permanent", "General", address, "5.1.1", "user unknown"),
        ),
        "soft": (
            "Bounce",
            _sample_bounce("Transient", "MailboxFull", address, "5.2.2", "Mailbox full"),
        ),
        "deferred": (
            "DeliveryDelay",
            {
                "delayType": "TransientCommunicationFailure",
                "delayedRecipients": [
                    {
                        "emailAddress": address,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                    }
                ],
            },
        ),
        "open": ("Open", {"ipAddress": "203.0.113.9", "userAgent": HUMAN_AGENT}),
        "click": (
            "Click",
            {"ipAddress": "203.0.113.9", "link": event.url, "userAgent": HUMAN_AGENT},
        ),
        "complaint": (
            "Complaint",
            {"complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse"},
        ),
    }
    return shapes.get(event.kind)


def _sample_bounce(kind: str, subtype: str, address: str, status: str, text: str) -> dict[str, Any]:
    return {
        "bounceType": kind,
        "bounceSubType": subtype,
        "bouncedRecipients": [
            {
                "emailAddress": address,
                "action": "failed",
                "status": status,
                "diagnosticCode": f"smtp; {'550' if status[0] == '5' else '452'} {status} {text}",
            }
        ],
    }


def sample(event: Sample) -> dict[str, Any] | None:
    """An SES event-publishing record in an unsigned SNS envelope (None for replies, which SES
    does not report, and for machine opens, which it does not tell apart)."""
    when = format_timestamp_ms(event.at_ms)
    shape = _sample_details(event)
    if shape is None:
        return None
    event_type, details = shape
    record = {
        "eventType": event_type,
        "mail": {
            "timestamp": format_timestamp_ms(max(event.at_ms - 1000, 0)),
            "source": "News <news@example.com>",
            "sendingAccountId": "123456789012",
            "messageId": event.message_id,
            "destination": [event.address],
            "tags": {"campaign": ["spring"], "ses:configuration-set": ["ConfigSet"]},
        },
        DETAIL_KEYS[event_type]: {**details, "timestamp": when},
    }
    return sample_envelope(record, str(uuid.uuid5(uuid.NAMESPACE_URL, event.event_id)), event.at_ms)


# --- Local credentials ----------------------------------------------------------------------

LOCAL_KEY_BITS = 2048
LOCAL_VALIDITY = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def local_auth(directory: Path) -> ProviderAuth:
    """A fresh RSA key and a self-signed certificate of it in `directory` (trusted in place of
    SNS's), for SAMPLE_TOPIC_ARN: the demo's, the tests' and the benchmarks' credentials. The
    certificate is valid 2000-2100, so fixed test clocks pass."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=LOCAL_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com (local)")])
    valid_from, valid_until = LOCAL_VALIDITY
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"ses-sns-{certificate.serial_number:x}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ProviderAuth(
        sns_topic_arns=(SAMPLE_TOPIC_ARN,),
        sns_certificate_files=(str(path),),
        signing_keys=(pem.decode().strip(),),  # as it reads back from the environment
    )


PROVIDER = WebhookProvider(
    NAME,
    normalize,
    verify,
    sign,
    message_id_of,
    sample,
    sign_body=sign_body,
    local_auth_of=local_auth,
    subscription_request_of=subscription_request,
    verify_blocks=True,
)
