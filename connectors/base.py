"""The provider contract and the helpers every connector shares.

A provider module (mailbot.py, inboxroad.py, maileroo.py) opens with its mapping tables, then
holds pure functions: `normalize(item, received_at)` for one decoded JSON object, `verify`,
`sign` and `message_id_of`. `WebhookProvider` assembles them into a `Provider`, adding what is
the same for all: size limit, JSON decoding, batches, and the never-raising `message_key`.

Amazon SNS (SES) asks the receiver to confirm a subscription with a signed request:
`subscription_request` names the URL to visit, and whether the configuration lets the ingest
visit it. Its certificate may have to be fetched, so the ingest verifies it off the event loop
(`verify_blocks`).

Most providers sign the body in headers. A provider that carries its signature inside the body
(Mailgun, SES) also gives `sign_body`, so `signed` returns the body as it would arrive. Mailgun's
signature covers a one-time token rather than the body, so it gives `replay_token_of` too, and
the ingest refuses a token presented again with another body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

from mailstream.addresses import canonical_address
from mailstream.classify import classify_bounce, extract_status
from mailstream.errors import ErrorKind, ParseError, SignatureError
from mailstream.events import BounceClass, EmailEvent
from mailstream.settings import AuthMode, ProviderAuth
from mailstream.times import MAX_EPOCH_MS, iso_epoch_ms

MAX_BODY_BYTES = 8 * 1024 * 1024  # far above any real webhook batch; a larger body is abuse
Item = Mapping[str, Any]


@runtime_checkable
class Provider(Protocol):
    @property
    def name(self) -> str: ...

    def parse(self, body: bytes, received_at: int | None = None) -> list[EmailEvent]:
        """Canonical events of a webhook body (one JSON object or an array of them).
        Raises only ParseError; an unknown event type gives an UNKNOWN event."""
        ...

    def verify(
        self, body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float
    ) -> None:
        """Raises SignatureError unless the request is authentic under `config` at `now`."""
        ...

    def sign(self, body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
        """Headers that make `body` pass `verify` with `config` (tests, demo, benchmarks)."""
        ...

    def signed(self, body: bytes, config: ProviderAuth, now: float) -> tuple[bytes, dict[str, str]]:
        """The request that passes `verify`: `body` as the provider would send it (signed
        inside, for providers that sign there; otherwise unchanged) and its headers."""
        ...

    def replay_token(self, body: bytes) -> bytes | None:
        """The one-time token of a verified body whose signature does not cover the body
        (Mailgun's), which the ingest refuses to see again with another body; None for
        providers whose signature covers the body. Never raises."""
        ...

    def message_key(self, body: bytes) -> bytes | None:
        """Best-effort message id of the body's first event, for the Kafka key. Never raises."""
        ...

    @property
    def verify_blocks(self) -> bool:
        """Whether `verify` may block (fetch a certificate): the ingest then runs it in a
        thread."""
        ...

    def subscription_request(self, body: bytes, config: ProviderAuth) -> SubscriptionRequest | None:
        """For a verified request asking to confirm a subscription, the URL and how to confirm
        it; None for every other request."""
        ...

    def local_auth(self, directory: Path) -> ProviderAuth:
        """Fresh credentials (new ones at every call) under which `signed` and `verify`
        agree, for local runs (the demo, tests, benchmarks); files they need (a certificate)
        are written in `directory`."""
        ...

    def sample(self, sample: Sample) -> dict[str, Any] | None:
        """A payload as the provider sends it for `sample`, or None when the provider does not
        report that kind of event (generated campaigns, the demo, benchmarks)."""
        ...


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A verified request asking the receiver to confirm a subscription by visiting `url`.
    `confirm` visits it (blocking, raising OSError or ValueError); None when the provider's
    settings say only to log it."""

    url: str
    confirm: Callable[[], None] | None


@dataclass(frozen=True, slots=True)
class WebhookProvider:
    name: str
    normalize: Callable[[Item, int | None], list[EmailEvent]]
    verify_request: Callable[[bytes, Mapping[str, str], ProviderAuth, float], None]
    sign_request: Callable[[bytes, ProviderAuth, float], dict[str, str]]
    message_id_of: Callable[[Item], str | None]
    sample_of: Callable[[Sample], dict[str, Any] | None]
    sign_body: Callable[[bytes, ProviderAuth, float], bytes] | None = None
    replay_token_of: Callable[[Item], str | None] | None = None
    local_auth_of: Callable[[Path], ProviderAuth] | None = None
    subscription_request_of: Callable[[bytes, ProviderAuth], SubscriptionRequest | None] | None = (
        None
    )
    verify_blocks: bool = False

    def parse(self, body: bytes, received_at: int | None = None) -> list[EmailEvent]:
        items = decode_items(body)
        if len(items) == 1:
            return self.normalize(items[0], received_at)
        events: list[EmailEvent] = []
        for index, item in enumerate(items):
            try:
                events.extend(self.normalize(item, received_at))
            except ParseError as exc:
                raise ParseError(exc.kind, f"batch item {index}: {exc.message}") from exc
        return events

    def verify(
        self, body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float
    ) -> None:
        self.verify_request(body, headers, config, now)

    def sign(self, body: bytes, config: ProviderAuth, now: float) -> dict[str, str]:
        return self.sign_request(body, config, now)

    def signed(self, body: bytes, config: ProviderAuth, now: float) -> tuple[bytes, dict[str, str]]:
        if self.sign_body is not None:
            body = self.sign_body(body, config, now)
        return body, self.sign_request(body, config, now)

    def replay_token(self, body: bytes) -> bytes | None:
        if self.replay_token_of is None:
            return None
        try:
            document = orjson.loads(body)
            token = self.replay_token_of(document) if isinstance(document, dict) else None
            return token.encode() if token else None
        except Exception:  # like message_key: the ingest asks after verify, and must not fail
            return None

    def subscription_request(self, body: bytes, config: ProviderAuth) -> SubscriptionRequest | None:
        if self.subscription_request_of is None:
            return None
        return self.subscription_request_of(body, config)

    def local_auth(self, directory: Path) -> ProviderAuth:
        if self.local_auth_of is not None:
            return self.local_auth_of(directory)
        return ProviderAuth(secrets=(secrets.token_urlsafe(24),))

    def message_key(self, body: bytes) -> bytes | None:
        try:
            document = orjson.loads(body)
            item = document[0] if isinstance(document, list) and document else document
            message_id = self.message_id_of(item) if isinstance(item, dict) else None
            return message_id.encode() if message_id else None
        except Exception:  # a best-effort key must never fail the ingest
            return None

    def sample(self, sample: Sample) -> dict[str, Any] | None:
        return self.sample_of(sample)


# --- Sample payloads ------------------------------------------------------------------------

SampleKind = Literal[
    "delivered", "hard", "soft", "deferred", "open", "open_machine", "click", "reply", "complaint"
]
HUMAN_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/122.0 Safari/537.36"
)
PROXY_AGENT = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One event of a generated campaign, before a provider gives it its shape. open_machine is
    an open by a mail-privacy proxy; `url` is what a click follows (maybe an unsubscribe link)."""

    kind: SampleKind
    address: str
    message_id: str
    at_ms: int
    event_id: str
    url: str


# --- Decoding -------------------------------------------------------------------------------

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def decode_items(body: bytes) -> list[Item]:
    """The JSON objects of a webhook body: one object, or each object of a top-level array."""
    if len(body) > MAX_BODY_BYTES:
        raise ParseError(
            ErrorKind.TOO_LARGE, f"body is {len(body)} bytes, the limit is {MAX_BODY_BYTES}"
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            raise ParseError(
                ErrorKind.NOT_UTF8,
                f"body is not UTF-8 (byte {utf8_error.start}); send JSON in UTF-8",
            ) from exc
        raise ParseError(ErrorKind.INVALID_JSON, f"body is not JSON: {exc}") from exc
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise ParseError(
                    ErrorKind.WRONG_TYPE,
                    f"batch item {index} is {json_type(item)}, expected an object",
                )
        return document
    raise ParseError(
        ErrorKind.WRONG_TYPE,
        f"body is {json_type(document)}, expected an object or an array of them",
    )


def get_str(item: Item, key: str) -> str | None:
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected a string")


def get_bool(item: Item, key: str) -> bool | None:
    value = item.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected a boolean")


def table_key(value: str | None) -> str:
    """How a provider's name of a type or category is looked up in a mapping table: trimmed
    and lower-cased, "" for none."""
    return (value or "").strip().lower()


def get_id(item: Item, key: str) -> str | None:
    """An identifier that providers send as a string or a number, as a string."""
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ParseError(
        ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected a string or number"
    )


def get_object(item: Item, key: str) -> Item | None:
    value = item.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected an object")


def string_map(value: Any, key: str) -> dict[str, str]:
    """Provider tags as str -> str: null is empty, scalars become strings, nested JSON is
    kept as compact JSON text."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(ErrorKind.WRONG_TYPE, f"{key!r} is {json_type(value)}, expected an object")
    return {name: _tag_text(tag) for name, tag in value.items()}


def _tag_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()  # true -> "true", 3 -> "3", [1] -> "[1]"


# --- Normalizing values ---------------------------------------------------------------------


def clean_address(value: str | None) -> str | None:
    """The canonical address (`canonical_address`); None for a missing or blank one."""
    return canonical_address(value) or None if value is not None else None


def classified_failure(
    category_class: BounceClass | None,
    status: str | None,
    text: str | None,
    category: str | None,
    *,
    diagnostic: str | None = None,
) -> dict[str, Any]:
    """The failure fields of a canonical event: the one classifier's class and reason for the
    provider's own class (`category_class`, None to leave it to the evidence), an SMTP status
    or code (`status`) and the receiving server's words (`text`); the enhanced status code
    found in either; the provider's category as given; `diagnostic` shown (default `text`)."""
    bounce_class, bounce_reason = classify_bounce(category_class, status, text)
    return {
        "bounce_class": bounce_class,
        "bounce_reason": bounce_reason,
        "provider_category": category,
        "smtp_status": extract_status(status) or extract_status(text),
        "diagnostic": text if diagnostic is None else diagnostic,
    }


def clean_message_id(value: str | None) -> str | None:
    """Message id without surrounding whitespace and angle brackets; blank gives None."""
    if value is None:
        return None
    return value.strip().removeprefix("<").removesuffix(">").strip() or None


def deterministic_event_id(provider: str, item: Item) -> str:
    """sha256 of the provider name and the item's canonical JSON (sorted keys): redeliveries
    of the same payload get the same id, so they deduplicate."""
    payload = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(provider.encode() + b"\n" + payload).hexdigest()


_MAX_EPOCH_SECONDS = MAX_EPOCH_MS // 1000


def epoch_ms(value: Any, key: str) -> int:
    """Epoch milliseconds from unix seconds (number or numeric string) or ISO 8601 text
    (without a zone it is read as UTC)."""
    if isinstance(value, str):
        return _epoch_ms_from_text(value.strip(), key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(
            ErrorKind.WRONG_TYPE,
            f"{key!r} is {json_type(value)}, expected unix seconds or ISO 8601",
        )
    if not 0 <= value <= _MAX_EPOCH_SECONDS:
        raise ParseError(
            ErrorKind.INVALID_VALUE, f"{key!r} = {value!r} is not unix seconds in 1970-9999"
        )
    return int(value) * 1000 if isinstance(value, int) else round(value * 1000)


def _epoch_ms_from_text(text: str, key: str) -> int:
    if text.isascii() and text.replace(".", "", 1).isdigit():
        return epoch_ms(float(text) if "." in text else int(text), key)
    try:
        moment_ms = iso_epoch_ms(text)
    except ValueError:
        raise ParseError(
            ErrorKind.INVALID_VALUE, f"{key!r} = {text[:40]!r} is neither unix seconds nor ISO 8601"
        ) from None
    if moment_ms < 0:
        raise ParseError(ErrorKind.INVALID_VALUE, f"{key!r} = {text[:40]!r} is before 1970")
    return moment_ms


# --- Authentication -------------------------------------------------------------------------


def lookup_header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (works for plain dicts and multidicts alike)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


MAX_CREDENTIAL_CHARS = 1024  # far above any signature, API key or basic-auth header
# Unix seconds have 10 digits until 2286; a longer header is refused before int() reads it
# (thousands of digits: ValueError; hundreds: OverflowError when compared with a float).
MAX_TIMESTAMP_DIGITS = 12


def fresh_timestamp(
    headers: Mapping[str, str], header: str, config: ProviderAuth, now: float
) -> str:
    """The unix-seconds timestamp a signed request carries in `header`, as sent; SignatureError
    unless it lies within `max_age_seconds` of `now` either way (a replay, or a clock off)."""
    timestamp = lookup_header(headers, header)
    if timestamp is None:
        raise SignatureError(f"missing {header} header")
    return fresh_seconds(timestamp, header, config, now)


def fresh_seconds(timestamp: str, name: str, config: ProviderAuth, now: float) -> str:
    """`timestamp` (unix seconds as text, named `name` in errors) as given; SignatureError
    unless it lies within `max_age_seconds` of `now` either way. For timestamps that are not
    in a header (Mailgun signs inside the body); `fresh_timestamp` reads them from one."""
    if len(timestamp) > MAX_TIMESTAMP_DIGITS or not (timestamp.isascii() and timestamp.isdigit()):
        raise SignatureError(f"{name} must be unix seconds")
    skew = now - int(timestamp)
    if abs(skew) > config.max_age_seconds:
        raise SignatureError(
            f"{name} is {skew:.0f} s from now, outside the "
            f"{config.max_age_seconds} s window: a replay, or a clock is off"
        )
    return timestamp


def presented_credential(
    headers: Mapping[str, str], header: str, config: ProviderAuth, configured: bool, provider: str
) -> str | None:
    """The credential the request carries in `header`, or None when the request may pass
    unchecked (allow_unsigned). Raises SignatureError when neither holds, or when the header
    is longer than MAX_CREDENTIAL_CHARS (before anything decodes it)."""
    value = lookup_header(headers, header) if configured else None
    return checked_credential(value, header, f"{header} header", config, configured, provider)


def checked_credential(
    value: str | None,
    name: str,
    place: str,
    config: ProviderAuth,
    configured: bool,
    provider: str,
) -> str | None:
    """`presented_credential` for a credential already read from wherever the provider puts
    it (`place` names it in "missing ..."): None when the request may pass unchecked, else
    the value; SignatureError when neither holds or it is longer than MAX_CREDENTIAL_CHARS."""
    if not configured:
        if config.allow_unsigned:
            return None
        raise SignatureError(
            f"no secret configured for {provider}: configure one "
            "(or allow_unsigned, for local testing only)"
        )
    if value is None:
        if config.allow_unsigned:
            return None
        raise SignatureError(f"missing {place}")
    if len(value) > MAX_CREDENTIAL_CHARS:
        raise SignatureError(f"{name} is longer than {MAX_CREDENTIAL_CHARS} characters")
    return value


def require_mode(config: ProviderAuth, mode: AuthMode, provider: str) -> None:
    if config.mode != mode:
        raise SignatureError(f"{provider} supports only mode={mode!r}, configured {config.mode!r}")


HMAC_PREFIX = "sha256="


def verify_basic_auth(headers: Mapping[str, str], config: ProviderAuth, provider: str) -> None:
    """HTTP basic auth with one of the configured `basic_auth` user:password pairs; raises
    SignatureError otherwise (passes an unsigned request only when `allow_unsigned`)."""
    authorization = presented_credential(
        headers, "Authorization", config, bool(config.basic_auth), provider
    )
    if authorization is None:
        return
    scheme, _, encoded = authorization.strip().partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError(scheme)
        presented = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        raise SignatureError("Authorization must be 'Basic <base64 of user:password>'") from None
    accepted = tuple(f"{user}:{password}" for user, password in config.basic_auth)
    if not secret_matches(presented, accepted):
        raise SignatureError("Authorization: unknown user or wrong password")


def basic_auth_headers(config: ProviderAuth, provider: str) -> dict[str, str]:
    """The Authorization header `verify_basic_auth` accepts (the first configured pair)."""
    if not config.basic_auth:
        raise ValueError(f"signing a {provider} request in basic mode needs basic_auth")
    user, password = config.basic_auth[0]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_hmac_header(
    headers: Mapping[str, str], header: str, message: bytes, config: ProviderAuth, provider: str
) -> None:
    """Check the hex HMAC-SHA256 of `message` that a request carries in `header` (an optional
    `sha256=` prefix, as many providers write it, is accepted) against every configured secret.
    Raises SignatureError when it does not match; passes an unsigned request only when
    `allow_unsigned` is set."""
    signature = presented_credential(headers, header, config, bool(config.secrets), provider)
    if signature is None:
        return
    digest = signature.strip().removeprefix(HMAC_PREFIX)
    if not hmac_matches(digest, message, config.secrets):
        raise SignatureError(f"{header} does not match: wrong secret or altered body")


def hmac_matches(candidate_hex: str, message: bytes, secrets: tuple[str, ...]) -> bool:
    """Constant-time check of a hex HMAC-SHA256 against every accepted secret."""
    candidate = candidate_hex.strip().lower().encode("utf-8", "replace")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(hmac_hex(secret, message).encode(), candidate)
    return matched


def secret_matches(candidate: str, accepted: tuple[str, ...]) -> bool:
    """Constant-time comparison of a presented key with every accepted one."""
    presented = candidate.encode("utf-8", "replace")
    matched = False
    for value in accepted:
        matched |= hmac.compare_digest(value.encode(), presented)
    return matched


def first_secret(config: ProviderAuth, provider: str) -> str:
    if not config.secrets:
        raise ValueError(f"signing a {provider} request needs a secret in ProviderAuth.secrets")
    return config.secrets[0]
