"""SparkPost event webhooks.

Evidence: https://developers.sparkpost.com/api/webhooks/ (its "Webhook Event Types" samples and
the machine-readable https://api.sparkpost.com/api/v1/webhooks/events/documentation): the body
is a JSON array of `{"msys": {<wrapper>: {...}}}` items, the wrapper naming the event class
(message_event, track_event, gen_event, unsubscribe_event, relay_event, ...) and the event
object carrying its `type`. The validation batch a webhook gets when it is created or tested
is `[{"msys": {}}]`: an item with no event, which gives none. Quirks, as the samples show them:
`timestamp` is unix seconds as a string (older samples and some gen_events carry ISO 8601);
`bounce_class` is a number as a string; `event_id` is SparkPost's own unique id ("can also be
used in duplicate detection"); `message_id` is per recipient, `transmission_id` is shared by
every recipient of one API call, so `message_id` is the message id and `transmission_id` a tag;
`rcpt_to` is lower-cased, `raw_rcpt_to` as given; `raw_reason` is the remote server's answer
verbatim, `reason` the same with addresses redacted; `ip_address` is the receiving MTA's in
message events and the requester's in engagement (track) events. Golden cases doc_<type>.json
are the event samples of samples.json in github.com/SparkPost/developers.sparkpost.com (the
samples API the documentation pages render), verbatim inside the msys wrapper the webhooks
page gives each class, with their ISO 8601 `timestamp`; doc_validation_batch.json is the
validation batch of content/api/webhooks.apib in the same repository.

Authentication: https://support.sparkpost.com/docs/tech-resources/webhook-authentication and
the `auth_type` / `auth_token` / `custom_headers` fields of the webhooks API. SparkPost signs
nothing. Mode "basic": HTTP basic auth with one of `basic_auth` (auth_type basic). Mode
"api_key": one of `secrets` in X-MessageSystems-Webhook-Token (the deprecated auth_token), or in
`api_key_header` for a token sent as a custom header. OAuth 2.0 (a bearer token SparkPost
fetches from the receiver's own token server) is not supported. Neither mode covers the body:
its integrity rests on TLS alone.
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
    first_secret,
    get_bool,
    get_id,
    get_object,
    get_str,
    json_type,
    presented_credential,
    secret_matches,
    string_map,
    verify_basic_auth,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "sparkpost"
TOKEN_HEADER = "X-MessageSystems-Webhook-Token"  # noqa: S105 - a header name, not a secret

# https://developers.sparkpost.com/api/webhooks/#header-webhook-event-types, by wrapper.
# message_event: injection "Message is received by or injected into SparkPost" (QUEUED);
# policy_rejection "Due to policy, SparkPost rejected a message or failed to generate a
# message"; out_of_band "Remote MTA initially reported acceptance of a message, but it has
# since asynchronously reported that the message was not delivered" (a late bounce).
# gen_event: generation_failure ("Message generation failed for an intended recipient", e.g. a
# template error) and generation_rejection ("SparkPost rejected message generation due to
# policy", e.g. a suppressed address) were never sent: REJECTED. track_event: initial_open is
# the pixel at the top of the message, open the one at the bottom (see PIXEL_AT_THE_BOTTOM).
# relay_event (relay_injection, relay_rejection, relay_delivery, relay_tempfail,
# relay_permfail) reports on inbound mail relayed to the customer, not on a sent message;
# sms_status, ab_test_event and ingest_event are not about email recipients: all UNKNOWN.
EVENT_TYPES: dict[str, EventType] = {
    "injection": EventType.QUEUED,
    "delivery": EventType.DELIVERED,
    "delay": EventType.DEFERRED,
    "bounce": EventType.BOUNCED,
    "out_of_band": EventType.BOUNCED,
    "policy_rejection": EventType.REJECTED,
    "generation_failure": EventType.REJECTED,
    "generation_rejection": EventType.REJECTED,
    "spam_complaint": EventType.COMPLAINED,
    "initial_open": EventType.OPENED,
    "open": EventType.OPENED,
    "amp_initial_open": EventType.OPENED,
    "amp_open": EventType.OPENED,
    "click": EventType.CLICKED,
    "amp_click": EventType.CLICKED,
    "list_unsubscribe": EventType.UNSUBSCRIBED,
    "link_unsubscribe": EventType.UNSUBSCRIBED,
}
# A message with `initial_pixel` true carries both pixels, and one reading loads both: the
# bottom one's open then repeats the initial_open of the same reading and would count it
# twice. It is an open of its own only without the top pixel (a clipped message may load the
# top pixel alone, so the top one is the one kept).
PIXEL_AT_THE_BOTTOM = frozenset({"open", "amp_open"})

# https://support.sparkpost.com/docs/deliverability/bounce-classification-codes: every
# classification with SparkPost's name, description and category, and what it is here: the
# event type a bounce or out_of_band event becomes, and the class (None leaves it to the
# classifier, which reads raw_reason). SparkPost's "Admin" category (its own policies) is a
# refusal by the provider: REJECTED.
BOUNCE_CLASSES: dict[str, tuple[EventType, BounceClass | None]] = {
    # Undetermined: "The response text could not be identified."
    "1": (EventType.BOUNCED, None),
    # Invalid Recipient: "The recipient is invalid." (Hard)
    "10": (EventType.BOUNCED, BounceClass.HARD),
    # Soft Bounce: "The message soft bounced." (Soft)
    "20": (EventType.BOUNCED, BounceClass.SOFT),
    # DNS Failure: "The message bounced due to a DNS failure." (Soft: SparkPost sees it as
    # temporary, where a bare "host unknown" text would be HARD)
    "21": (EventType.BOUNCED, BounceClass.SOFT),
    # Mailbox Full: "...the remote mailbox being over quota." (Soft)
    "22": (EventType.BOUNCED, BounceClass.SOFT),
    # Too Large: "...too large for the recipient." (Soft)
    "23": (EventType.BOUNCED, BounceClass.SOFT),
    # Timeout: "The message timed out." (Soft): SparkPost stopped retrying after its queue
    # lifetime ("554 5.4.7 [internal] message timeout (last transfail: ...)",
    # https://support.sparkpost.com/docs/faq/understanding-delays-bounces), so EXPIRED.
    "24": (EventType.BOUNCED, BounceClass.EXPIRED),
    # Admin Failure: "The message was failed by SparkPost's configured policies." (Admin): not
    # sent, e.g. to an address on the suppression list; the class of any earlier failure is
    # not known.
    "25": (EventType.REJECTED, BounceClass.UNDETERMINED),
    # Generic Bounce: No RCPT: "No recipient could be determined for the message." (Hard)
    "30": (EventType.BOUNCED, BounceClass.HARD),
    # Generic Bounce: "The message failed for unspecified reasons." (Soft)
    "40": (EventType.BOUNCED, BounceClass.SOFT),
    # Mail Block: "The message was blocked by the receiver." (Block)
    "50": (EventType.BOUNCED, BounceClass.BLOCK),
    # Spam Block: "...blocked by the receiver as coming from a known spam source." (Block)
    "51": (EventType.BOUNCED, BounceClass.BLOCK),
    # Spam Content: "...blocked by the receiver as spam." (Block)
    "52": (EventType.BOUNCED, BounceClass.BLOCK),
    # Prohibited Attachment: "...blocked by the receiver because it contained an attachment."
    "53": (EventType.BOUNCED, BounceClass.BLOCK),
    # Relaying Denied: "...blocked by the receiver because relaying is not allowed." (Block)
    "54": (EventType.BOUNCED, BounceClass.BLOCK),
    # Auto-Reply: "The message is an auto-reply/vacation mail.": the message was delivered.
    "60": (EventType.UNKNOWN, None),
    # Transient Failure: "Message transmission has been temporarily delayed." (Soft)
    "70": (EventType.BOUNCED, BounceClass.SOFT),
    # Subscribe: "The message is a subscribe request." (Admin): not a failure.
    "80": (EventType.UNKNOWN, None),
    # Unsubscribe: "The message is an unsubscribe request." (Hard): the recipient asks to
    # receive no more mail.
    "90": (EventType.UNSUBSCRIBED, None),
    # Challenge-Response: "The message is a challenge-response probe." (Soft): held until the
    # sender answers, a recipient-side condition.
    "100": (EventType.BOUNCED, BounceClass.SOFT),
}
# policy_rejection, generation_rejection and generation_failure: SparkPost refused by its own
# policies or could not build the message (the "Admin" category of class 25, which the samples
# of both rejections carry): nothing about the recipient's address or the sender's reputation.
REJECTION_CLASS = BounceClass.UNDETERMINED
# Failures that get a bounce_class.
CLASSIFIED_TYPES = frozenset({EventType.BOUNCED, EventType.DEFERRED, EventType.REJECTED})
# Where ip_address is the requester's ("in engagement events, the IP address of the host where
# the HTTP request originated"); elsewhere it is the receiving MTA's.
ENGAGEMENT_WRAPPER = "track_event"


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    msys = get_object(item, "msys")
    if msys is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "SparkPost item has no msys object")
    events = []
    for wrapper, event in msys.items():  # one wrapper per item; none in the validation ping
        if not isinstance(event, dict):
            raise ParseError(
                ErrorKind.WRONG_TYPE, f"msys.{wrapper} is {json_type(event)}, expected an object"
            )
        events.append(_normalize_event(wrapper, event, received_at))
    return events


def _normalize_event(wrapper: str, event: Item, received_at: int | None) -> EmailEvent:
    raw_type = get_str(event, "type") or ""
    event_type = EVENT_TYPES.get(raw_type, EventType.UNKNOWN)
    if raw_type in PIXEL_AT_THE_BOTTOM and get_bool(event, "initial_pixel") is True:
        event_type = EventType.UNKNOWN
    code = get_id(event, "bounce_class")
    event_type, category_class = _bounce_class(event_type, code)
    diagnostic = _first_str(event, "raw_reason", "reason")
    bounce_class, bounce_reason = None, None
    if event_type in CLASSIFIED_TYPES:
        bounce_class, bounce_reason = classify_bounce(category_class, None, diagnostic)
    engagement = event_type in (EventType.OPENED, EventType.CLICKED)
    return new_event(
        event_id=get_id(event, "event_id") or deterministic_event_id(NAME, {wrapper: event}),
        provider=NAME,
        event_type=event_type,
        recipient=clean_address(_first_str(event, "rcpt_to", "raw_rcpt_to")),
        sender=clean_address(_first_str(event, "friendly_from", "msg_from")),
        message_id=clean_message_id(get_str(event, "message_id")),
        occurred_at=_occurred_at(event),
        received_at=received_at,
        bounce_class=bounce_class,
        bounce_reason=bounce_reason,
        provider_category=get_str(event, "fbtype") if raw_type == "spam_complaint" else code,
        smtp_status=extract_status(diagnostic),
        diagnostic=diagnostic,
        url=get_str(event, "target_link_url"),
        user_agent=get_str(event, "user_agent"),
        ip=get_str(event, "ip_address") if wrapper == ENGAGEMENT_WRAPPER else None,
        tags=_tags(event),
        # A subaccount is the sending team or customer inside the SparkPost account.
        tenant=get_id(event, "subaccount_id"),
        provider_flagged_machine=engagement and _prefetched(event),
    )


def _bounce_class(event_type: EventType, code: str | None) -> tuple[EventType, BounceClass | None]:
    """The event type and category class of a failure: a bounce_class refines a bounce's type
    and class and a delay's class; a code not in the table leaves both to the classifier."""
    if event_type is EventType.REJECTED:
        return event_type, REJECTION_CLASS
    if event_type not in (EventType.BOUNCED, EventType.DEFERRED) or code not in BOUNCE_CLASSES:
        return event_type, None
    bounced_type, category_class = BOUNCE_CLASSES[code]
    if event_type is EventType.BOUNCED:
        return bounced_type, category_class
    if category_class is BounceClass.EXPIRED:
        return event_type, BounceClass.SOFT  # a delay is a retry still to come, not the end
    return event_type, category_class


def _prefetched(event: Item) -> bool:
    """`user_agent_parsed.is_prefetched` (the events documentation endpoint's field list): the
    pixel or link was fetched ahead of the reader (a mail-privacy prefetch). `is_proxy` alone
    is not a machine: an image proxy fetches when the reader opens."""
    parsed = get_object(event, "user_agent_parsed") or {}
    return get_bool(parsed, "is_prefetched") is True


def _occurred_at(event: Item) -> int:
    value = event.get("timestamp")
    if value is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "SparkPost event has no timestamp")
    return epoch_ms(value, "timestamp")


def _first_str(event: Item, *keys: str) -> str | None:
    values = [get_str(event, key) for key in keys]  # every key type-checked
    return next((value for value in values if value), None)


def _tags(event: Item) -> dict[str, str]:
    """rcpt_meta, the rcpt_tags labels (bare: empty values), then campaign_id and
    transmission_id (the id the sending API call returned), which win over same-named keys."""
    tags = string_map(event.get("rcpt_meta"), "rcpt_meta")
    labels = event.get("rcpt_tags")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ParseError(ErrorKind.WRONG_TYPE, "'rcpt_tags' must be an array of strings")
        tags.update(dict.fromkeys(labels, ""))
    for key in ("campaign_id", "transmission_id"):
        value = get_id(event, key)
        if value:
            tags[key] = value
    return tags


def message_id_of(item: Item) -> str | None:
    msys = item.get("msys")
    if not isinstance(msys, dict):
        return None
    event = next(iter(msys.values()), None)
    message_id = event.get("message_id") if isinstance(event, dict) else None
    return clean_message_id(message_id) if isinstance(message_id, str) else None


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """mode "basic": HTTP basic auth with one of `basic_auth`; "api_key": one of `secrets` in
    X-MessageSystems-Webhook-Token (or `api_key_header`). SparkPost has no signature (hmac)."""
    if config.mode == "basic":
        verify_basic_auth(headers, config, NAME)
        return
    if config.mode == "api_key":
        header = config.api_key_header or TOKEN_HEADER
        token = presented_credential(headers, header, config, bool(config.secrets), NAME)
        if token is not None and not secret_matches(token, config.secrets):
            raise SignatureError(f"{header} is not an accepted token")
        return
    raise SignatureError(
        f"{NAME} signs nothing: configure mode 'basic' or 'api_key', not {config.mode!r}"
    )


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    if config.mode == "basic":
        return basic_auth_headers(config, NAME)
    if config.mode == "api_key":
        return {config.api_key_header or TOKEN_HEADER: first_secret(config, NAME)}
    raise ValueError(f"{NAME} signs nothing: sign in mode 'basic' or 'api_key'")


def local_auth(directory: Path) -> ProviderAuth:
    return ProviderAuth(mode="api_key", secrets=(secrets.token_urlsafe(24),))


# --- Sample payloads ------------------------------------------------------------------------

# (type, bounce_class, raw_reason) in the shape of the documentation's samples.
SAMPLE_FAILURES: dict[SampleKind, tuple[str, str, str]] = {
    "hard": ("bounce", "10", "550 5.1.1 <{address}>: Recipient address rejected: User unknown"),
    "soft": ("bounce", "22", "552 5.2.2 <{address}>: Mailbox full"),
    "deferred": ("delay", "70", "421 4.7.0 [TSS04] Messages temporarily deferred"),
}


def sample_payload(
    wrapper: str,
    event_type: str,
    address: str,
    message_id: str,
    at_ms: int,
    event_id: str,
    **fields: Any,
) -> dict[str, Any]:
    """A SparkPost webhook item in the shape of the documentation's samples; `fields` are added
    to the event object."""
    event: dict[str, Any] = {
        "type": event_type,
        "campaign_id": "spring",
        "customer_id": "1",
        "event_id": event_id,
        "friendly_from": "news@example.com",
        "message_id": message_id,
        "msg_from": "msprvs1=bounces-1@sparkpostmail.com",
        "rcpt_meta": {"campaign": "spring"},
        "rcpt_tags": ["newsletter"],
        "rcpt_to": address.lower(),
        "raw_rcpt_to": address,
        "subaccount_id": "101",
        "timestamp": str(at_ms // 1000),
        "transmission_id": "65832150921904138",
        **fields,
    }
    return {"msys": {wrapper: event}}


def sample(event: Sample) -> dict[str, Any] | None:
    shape = (event.address, event.message_id, event.at_ms, event.event_id)
    if event.kind == "delivered":
        return sample_payload("message_event", "delivery", *shape, ip_address="203.0.113.25")
    if event.kind in SAMPLE_FAILURES:
        event_type, bounce_class, reason = SAMPLE_FAILURES[event.kind]
        raw_reason = reason.format(address=event.address)
        return sample_payload(
            "message_event",
            event_type,
            *shape,
            bounce_class=bounce_class,
            error_code=raw_reason[:3],
            raw_reason=raw_reason,
            reason=reason.format(address="...@..."),
        )
    if event.kind == "complaint":
        return sample_payload("message_event", "spam_complaint", *shape, fbtype="abuse")
    if event.kind in ("open", "open_machine", "click"):
        machine = event.kind == "open_machine"
        reader: dict[str, Any] = {
            "initial_pixel": False,
            "ip_address": "17.58.0.1" if machine else "203.0.113.9",
            "user_agent": PROXY_AGENT if machine else HUMAN_AGENT,
            "user_agent_parsed": {"is_prefetched": machine, "is_proxy": machine},
        }
        if event.kind == "click":
            return sample_payload(
                "track_event", "click", *shape, **reader, target_link_url=event.url
            )
        return sample_payload("track_event", "open", *shape, **reader)
    return None  # SparkPost reports no replies (inbound mail arrives by relay webhooks)


PROVIDER = WebhookProvider(
    NAME, normalize, verify, sign, message_id_of, sample, local_auth_of=local_auth
)
