"""Realistic webhook streams for the demo, the tests and the benchmarks.

`campaign(...)` yields envelopes (`{"provider", "payload", "received_at"}`, the format
`mailstream simulate` reads) for a mixed campaign over the three providers: mostly deliveries
and opens, some clicks, bounces of every class, deferrals, complaints, unsubscribes and
replies, in event-time order per message. Seeded, so a test can regenerate the same stream.
Each provider module gives the payloads their shape (`Provider.sample`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from mailstream.connectors.base import Sample, SampleKind
from mailstream.connectors.registry import get_provider
from mailstream.topics import TopicNames

Envelope = dict[str, Any]
OFFER_URL = "https://example.com/offer"


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


def campaign(
    recipients: int,
    messages_per_recipient: int = 2,
    seed: int = 7,
    start_ms: int = 1_700_000_000_000,
) -> Iterator[Envelope]:
    """Envelopes in arrival order: each message's events in event-time order."""
    for envelopes in campaign_rounds(recipients, messages_per_recipient, seed, start_ms):
        yield from envelopes


def campaign_rounds(
    recipients: int, rounds: int = 2, seed: int = 7, start_ms: int = 1_700_000_000_000
) -> Iterator[list[Envelope]]:
    """One list per send round: every recipient gets one message per round."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not secrets
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
    events: list[tuple[SampleKind, int, dict[str, Any]]] = []
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
    provider: str,
    kind: SampleKind,
    address: str,
    message_id: str,
    at: int,
    event_id: str,
    extra: dict[str, Any],
) -> dict[str, Any] | None:
    url = "https://example.com/unsubscribe?u=1" if extra.get("unsubscribe") else OFFER_URL
    return get_provider(provider).sample(Sample(kind, address, message_id, at, event_id, url))
