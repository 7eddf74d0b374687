"""Inboxroad webhooks (PowerMTA accounting records posted as JSON).

Evidence: seeds/003_0a896b36dcf4e7b1.txt (English) and seeds/001_f8486717a5abc87f.txt (Dutch
edition, same sample) give the field list, the one sample payload (type "d") and
BOUNCE_MAPPER. seeds/README.md: `rb` is a remote bounce that can arrive after a `d` for the
same message; PowerMTA's other bounce categories; HMAC and API-key authentication of newer
setups. Quirks: `timeLogged` is unix seconds as a string; `dsnStatus` is a code followed by
its meaning ("2.0.0 (success)"); `header_Message-Id` keeps its angle brackets; payloads carry
no event id, so the id is derived from the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailstream.classify import classify_bounce, extract_status
from mailstream.connectors.base import (
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
    get_str,
    hmac_hex,
    presented_credential,
    secret_matches,
    verify_basic_auth,
    verify_hmac_header,
)
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent, EventType, new_event
from mailstream.settings import ProviderAuth

NAME = "inboxroad"
SIGNATURE_HEADER = "X-Inboxroad-Signature"
API_KEY_HEADER = "X-Api-Key"

# seeds/003 section 1: "b" bounced, "rb" remote bounced, "d" delivered, "f" complaint.
EVENT_TYPES: dict[str, EventType] = {
    "d": EventType.DELIVERED,
    "b": EventType.BOUNCED,
    "rb": EventType.BOUNCED,
    "f": EventType.COMPLAINED,
}

BOUNCE_CATEGORIES: dict[str, BounceClass] = {
    # seeds/003 section 4, BOUNCE_MAPPER verbatim.
    "message-expired": BounceClass.EXPIRED,
    "bad-mailbox": BounceClass.HARD,
    "bad-domain": BounceClass.HARD,
    "quota-issues": BounceClass.SOFT,
    "inactive-mailbox": BounceClass.SOFT,
    "no-answer-from-host": BounceClass.SOFT,
    "relaying-issues": BounceClass.SOFT,
    "routing-errors": BounceClass.SOFT,
    # seeds/README.md: PowerMTA's remaining categories are problems of the sender or its
    # content, not of the recipient's mailbox. "other" (and no bounceCat) is left to the
    # classifier, which reads dsnStatus and dsnDiag.
    "policy-related": BounceClass.BLOCK,
    "spam-related": BounceClass.BLOCK,
    "content-related": BounceClass.BLOCK,
    "virus-related": BounceClass.BLOCK,
    "invalid-sender": BounceClass.BLOCK,
    "bad-configuration": BounceClass.BLOCK,
    "bad-connection": BounceClass.BLOCK,
    "protocol-errors": BounceClass.BLOCK,
}


def normalize(item: Item, received_at: int | None) -> list[EmailEvent]:
    event_type = EVENT_TYPES.get(get_str(item, "type") or "", EventType.UNKNOWN)
    time_logged = item.get("timeLogged")
    if time_logged is None:
        raise ParseError(ErrorKind.MISSING_FIELD, "Inboxroad event has no timeLogged")
    category = get_str(item, "bounceCat")
    status = get_str(item, "dsnStatus")
    diagnostic = get_str(item, "dsnDiag")
    bounce_class, bounce_reason = None, None
    if event_type is EventType.BOUNCED:
        category_class = BOUNCE_CATEGORIES.get(category.strip().lower()) if category else None
        bounce_class, bounce_reason = classify_bounce(category_class, status, diagnostic)
    event = new_event(
        event_id=deterministic_event_id(NAME, item),
        provider=NAME,
        event_type=event_type,
        recipient=clean_address(get_str(item, "rcpt")),
        sender=clean_address(get_str(item, "orig")),
        message_id=message_id_of(item),
        occurred_at=epoch_ms(time_logged, "timeLogged"),
        received_at=received_at,
        bounce_class=bounce_class,
        bounce_reason=bounce_reason,
        provider_category=category,
        smtp_status=extract_status(status) or extract_status(diagnostic),
        diagnostic=diagnostic,
        tenant=get_str(item, "rcvSmtpUser"),
    )
    return [event]


def message_id_of(item: Item) -> str | None:
    return clean_message_id(get_str(item, "header_Message-Id"))


def verify(body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float) -> None:
    """mode "hmac": hex HMAC-SHA256 of the raw body in X-Inboxroad-Signature; "api_key": one
    of `secrets` in X-Api-Key; "basic": HTTP basic auth with one of `basic_auth`."""
    if config.mode == "basic":
        verify_basic_auth(headers, config, NAME)
        return
    if config.mode == "api_key":
        header = config.api_key_header or API_KEY_HEADER
        key = presented_credential(headers, header, config, bool(config.secrets), NAME)
        if key is not None and not secret_matches(key, config.secrets):
            raise SignatureError(f"{header} is not an accepted API key")
        return
    verify_hmac_header(headers, config.signature_header or SIGNATURE_HEADER, body, config, NAME)


def sign(body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
    if config.mode == "basic":
        return basic_auth_headers(config, NAME)
    if config.mode == "api_key":
        return {config.api_key_header or API_KEY_HEADER: first_secret(config, NAME)}
    return {config.signature_header or SIGNATURE_HEADER: hmac_hex(first_secret(config, NAME), body)}


# Sample payloads in the shape of seeds/inboxroad (bounceCat, dsnStatus and dsnDiag as listed).
SAMPLE_BOUNCES = (
    ("bad-mailbox", "5.1.1 (bad destination mailbox address)", "smtp;550 5.1.1 User unknown"),
    ("quota-issues", "4.2.2 (mailbox full)", "smtp;452 4.2.2 Mailbox full"),
    ("message-expired", "4.4.7 (delivery time expired)", "smtp;421 4.4.7 Message expired"),
    ("spam-related", "5.7.1 (delivery not authorized)", "smtp;550 5.7.1 Message rejected as spam"),
)
_SAMPLE_KINDS: dict[SampleKind, tuple[str, int]] = {
    "delivered": ("d", 0),
    "hard": ("b", 0),
    "soft": ("b", 1),
    "complaint": ("f", 0),
}


def sample_payload(
    kind: str, rcpt: str, message_id: str, at_ms: int, bounce: int = 0
) -> dict[str, Any]:
    """An Inboxroad webhook: `kind` d, b, rb or f; `bounce` indexes SAMPLE_BOUNCES."""
    payload = {
        "type": kind,
        "timeLogged": str(at_ms // 1000),
        "orig": "news@rp.example.com",
        "rcpt": rcpt,
        "dsnAction": "relayed" if kind == "d" else "failed",
        "dsnStatus": "2.0.0 (success)",
        "dsnDiag": "smtp;250 2.0.0 OK",
        "bounceCat": "other",
        "rcvSmtpUser": "user",
        "header_Message-Id": f"<{message_id}>",
        "vmta": "a000",
    }
    if kind in ("b", "rb"):
        category, status, diagnostic = SAMPLE_BOUNCES[bounce]
        payload |= {"bounceCat": category, "dsnStatus": status, "dsnDiag": diagnostic}
    return payload


def sample(event: Sample) -> dict[str, Any] | None:
    if event.kind not in _SAMPLE_KINDS:
        return None  # Inboxroad reports deliveries, bounces and complaints only
    code, bounce = _SAMPLE_KINDS[event.kind]
    return sample_payload(code, event.address, event.message_id, event.at_ms, bounce)


PROVIDER = WebhookProvider(NAME, normalize, verify, sign, message_id_of, sample)
