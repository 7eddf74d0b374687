"""The providers by name, and the Python API: `parse(provider, body, received_at)`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailstream.connectors import (
    inboxroad,
    mailbot,
    maileroo,
    mailgun,
    postmark,
    resend,
    sendgrid,
    ses,
    sparkpost,
)
from mailstream.connectors.base import Provider
from mailstream.errors import ErrorKind, ParseError
from mailstream.events import MAX_TENANT_CHARS, EmailEvent

PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            inboxroad.PROVIDER,
            mailbot.PROVIDER,
            maileroo.PROVIDER,
            mailgun.PROVIDER,
            postmark.PROVIDER,
            resend.PROVIDER,
            sendgrid.PROVIDER,
            ses.PROVIDER,
            sparkpost.PROVIDER,
        )
    }
)


def get_provider(name: str) -> Provider:
    provider = PROVIDERS.get(name)
    if provider is None:
        raise ParseError(
            ErrorKind.UNKNOWN_PROVIDER,
            f"no provider {name!r}; known: {', '.join(sorted(PROVIDERS))}",
        )
    return provider


def parse(provider: str, body: bytes, received_at: int | None = None) -> list[EmailEvent]:
    """Canonical events of one webhook body (see `mailstream.connectors.base.Provider.parse`).

    Raises ParseError (with `kind` and an actionable message) for a body it cannot parse or
    an unknown provider; unknown event types are UNKNOWN events, never errors. A tenant id
    longer than MAX_TENANT_CHARS is invalid: it keys per-tenant state and published records.
    """
    events = get_provider(provider).parse(body, received_at)
    for event in events:
        tenant = event["tenant"]
        if tenant is not None and len(tenant) > MAX_TENANT_CHARS:
            raise ParseError(
                ErrorKind.INVALID_VALUE,
                f"tenant {tenant[:40]!r}... has {len(tenant)} characters "
                f"(at most {MAX_TENANT_CHARS})",
            )
    return events
