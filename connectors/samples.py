"""Realistic webhook streams for the demo, the tests and the benchmarks.

`campaign(...)` yields envelopes (`{"provider", "payload", "received_at"}`, the format
`mailstream simulate` reads) for a mixed campaign over the three providers: mostly deliveries
and opens, some clicks, bounces of every class, deferrals, complaints, unsubscribes and
replies, in event-time order per message. Seeded, so a test can regenerate the same stream.
The payload builders follow the shapes of the provider documents in shared/seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from mailstream.connectors.registry import get_provider
from mailstream.events import format_timestamp_ms
from mailstream.topics import TopicNames

Envelope = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    key: bytes | None
    value: bytes | None


def raw_record(names: TopicNames, envelope: Envelope) -> RawRecord:
    """A webhook as the ingest lands it: the body on its provider's raw topic, keyed by the
    provider's message id."""
    payload = envelope["payload"]
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    provider = envelope["provider"]
    return RawRecord(names.raw(provider), get_provider(provider).message_key(body), body)

HUMAN_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/122.0 Safari/537.36"
PROXY_AGENT = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"

INBOXROAD_BOUNCES = (
    ("bad-mailbox", "5.1.1 (bad destination mailbox address)", "smtp;550 5.1.1 User unknown"),
    ("quota-issues", "4.2.2 (mailbox full)", "smtp;452 4.2.2 Mailbox full"),
    ("message-expired", "4.4.7 (delivery time expired)", "smtp;421 4.4.7 Message expired"),
    ("spam-related", "5.7.1 (delivery not authorized)", "smtp;550 5.7.1 Message rejected as spam"),
)


def inboxroad(kind: str, rcpt: str, message_id: str, at_ms: int, bounce: int = 0) -> dict[str, Any]:
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
        category, status, diagnostic = INBOXROAD_BOUNCES[bounce]
        payload |= {"bounceCat": category, "dsnStatus": status, "dsnDiag": diagnostic}
    return payload


def maileroo(
    event_type: str, to: str | None, message_id: str, at_ms: int, event_id: str, **data: str
) -> dict[str, Any]:
    event_data: dict[str, Any] = {"to": to} if to is not None else {}
    event_data.update(data)
    return {
        "domain_id": 774,
        "event_data": event_data,
        "event_id": event_id,
        "event_time": at_ms // 1000,
        "event_type": event_type,
        "inserted_at": "2024-03-15T23:32:57.401Z",
        "message_id": f"<{message_id}>",
        "message_reference_id": event_id[:32],
        "tags": {"campaign": "spring"},
        "user_id": 323,
    }


def mailbot(
    event_type: str, recipient: str | None, message_id: str, at_ms: int, event_id: str, **extra: Any
) -> dict[str, Any]:
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


def campaign(
    recipients: int, messages_per_recipient: int = 2, seed: int = 7, start_ms: int = 1_700_000_000_000
) -> Iterator[Envelope]:
    """Envelopes in arrival order: each message's events in event-time order."""
    for envelopes in campaign_rounds(recipients, messages_per_recipient, seed, start_ms):
        yield from envelopes


def campaign_rounds(
    recipients: int, rounds: int = 2, seed: int = 7, start_ms: int = 1_700_000_000_000
) -> Iterator[list[Envelope]]:
    """One list per send round: every recipient gets one message per round."""
    rng = random.Random(seed)
    providers = ("mailbot", "inboxroad", "maileroo")
    clock = start_ms
    serial = 0
    for round_index in range(rounds):
        envelopes: list[Envelope] = []
        for index in range(recipients):
            serial += 1
            clock += rng.randint(1, 400)
            address = f"user{index}@example.{('com', 'net', 'org')[index % 3]}"
            provider = providers[(index + round_index) % 3]
            message_id = f"m{serial}.{seed}@mail.example.com"
            envelopes.extend(_message_events(rng, provider, address, message_id, clock, serial))
        yield envelopes


def _message_events(
    rng: random.Random, provider: str, address: str, message_id: str, sent_at: int, serial: int
) -> Iterator[Envelope]:
    roll = rng.random()
    events: list[tuple[str, int, dict[str, Any]]] = []
    delivered_at = sent_at + rng.randint(500, 5_000)
    if roll < 0.02:
        events.append(("hard", delivered_at, {}))
    elif roll < 0.06:
        events.append(("soft", delivered_at, {}))
    elif roll < 0.08:
        events.append(("deferred", delivered_at, {}))
    else:
        events.append(("delivered", delivered_at, {}))
        at = delivered_at
        if rng.random() < 0.1:
            events.append(("open_machine", delivered_at + rng.randint(0, 2_000), {}))
        if rng.random() < 0.4:
            for _ in range(rng.randint(1, 4)):
                at += rng.randint(60_000, 3_600_000)
                events.append(("open", at, {}))
            if rng.random() < 0.25:
                at += rng.randint(10_000, 600_000)
                unsubscribe = rng.random() < 0.04
                events.append(("click", at, {"unsubscribe": unsubscribe}))
            if rng.random() < 0.03:
                at += rng.randint(60_000, 86_400_000)
                events.append(("reply" if provider == "mailbot" else "complaint", at, {}))
        if rng.random() < 0.002:
            events.append(("complaint", at + 3_600_000, {}))
    for number, (kind, at, extra) in enumerate(events):
        event_id = f"e{serial}-{number}"
        payload = _payload(provider, kind, address, message_id, at, event_id, extra)
        if payload is not None:
            yield {"provider": provider, "payload": payload, "received_at": at + 1_000}


def _payload(
    provider: str, kind: str, address: str, message_id: str, at: int, event_id: str, extra: dict[str, Any]
) -> dict[str, Any] | None:
    url = "https://example.com/unsubscribe?u=1" if extra.get("unsubscribe") else "https://example.com/offer"
    if provider == "inboxroad":
        inboxroad_kinds = {"delivered": ("d", 0), "hard": ("b", 0), "soft": ("b", 1), "complaint": ("f", 0)}
        if kind not in inboxroad_kinds:
            return None  # Inboxroad reports deliveries, bounces and complaints only
        code, bounce = inboxroad_kinds[kind]
        return inboxroad(code, address, message_id, at, bounce)
    if provider == "maileroo":
        agent = PROXY_AGENT if kind == "open_machine" else HUMAN_AGENT
        builders: dict[str, tuple[str, str | None, dict[str, str]]] = {
            "delivered": ("delivered", address, {}),
            "hard": ("failed", address, {"reason": "550-5.1.1 The email account that you tried to reach does not exist."}),
            "soft": ("failed", address, {"reason": "452-4.2.2 The recipient's inbox is out of storage space."}),
            "deferred": ("deferred", address, {"reason": "421-4.7.0 Try again later"}),
            "open": ("opened", None, {"ip": "203.0.113.9", "user_agent": agent}),
            "open_machine": ("opened", None, {"ip": "66.249.84.1", "user_agent": agent}),
            "click": ("clicked", None, {"ip": "203.0.113.9", "user_agent": agent, "original_url": url}),
            "complaint": ("complained", address, {}),
        }
        event_type, to, data = builders[kind]
        return maileroo(event_type, to, message_id, at, event_id, **data)
    names = {
        "delivered": ("message.delivered", {}),
        "hard": ("message.bounced", {"bounce_type": "hard", "diagnostic": "550 5.1.1 user unknown"}),
        "soft": ("message.bounced", {"bounce_type": "soft", "diagnostic": "452 4.2.2 mailbox full"}),
        "deferred": ("message.deferred", {}),
        "open": ("message.opened", {"user_agent": HUMAN_AGENT}),
        "open_machine": ("message.opened", {"user_agent": PROXY_AGENT}),
        "click": ("message.clicked", {"url": url, "user_agent": HUMAN_AGENT}),
        "reply": ("message.replied", {}),
    }
    if kind not in names:
        return None  # mailbot's documented events carry no complaints
    event_type, fields = names[kind]
    recipient = address if kind in ("delivered", "hard", "soft", "deferred", "reply") else None
    return mailbot(event_type, recipient, message_id, at, event_id, **fields)
