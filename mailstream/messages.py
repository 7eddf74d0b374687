"""Recipient resolution: give every event its recipient and its message's delivery time.

Some events carry no address (Maileroo opens and clicks name only the message id); the
message table, keyed by `message_key(provider, message_id)`, remembers each message's
recipient and delivery time. `route` is the pure step the normalize agent and `mailstream
simulate` run on every event before `recipient.apply`:

- an event naming a recipient records it for its message (the first recipient wins) and
  releases the message's parked events, filled in, in arrival order, ahead of itself;
- a DELIVERED event records the delivery time (the earliest wins);
- the first tenant an event of the message names is the message's: an event naming none
  (mailbot's flat click shape has no inbox_id) counts for its message's sending team;
- likewise the first sender: opens and clicks rarely name one, and the deliverability
  figures count them per sending domain;
- an event without recipient is filled in from the table, else parked until an event of the
  same message names the recipient (at most `max_pending_per_message`; beyond: dead letter);
- an event without recipient and without message id is a dead letter.

Every ready event gets `delivered_at` from the table when it is known, which lets the rules
judge an open or click that came seconds after delivery as a machine's.

Released events stay in the table (`released`, with the id of the event that released them)
until another batch is released: after a crash between the table write and the sends, the
redelivered releasing event releases them again, and the state step's idempotency makes the
repeat harmless. Without that, the released events would be lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from mailstream.events import EmailEvent, EventType
from mailstream.policy import Policy

UNRESOLVABLE = "no recipient and no message id: cannot be resolved"


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What is known about one sent message; `pending` holds events awaiting its recipient."""

    recipient: str | None = None
    delivered_at: int | None = None
    tenant: str | None = None  # the first tenant an event of the message names
    sender: str | None = None  # the first sender an event of the message names
    pending: tuple[EmailEvent, ...] = ()
    released_by: str | None = None  # the event id that released `released`
    released: tuple[EmailEvent, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict for the message table."""
        return {
            "recipient": self.recipient,
            "delivered_at": self.delivered_at,
            "tenant": self.tenant,
            "sender": self.sender,
            "pending": list(self.pending),
            "released_by": self.released_by,
            "released": list(self.released),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MessageInfo:
        return cls(
            recipient=record.get("recipient"),
            delivered_at=record.get("delivered_at"),
            tenant=record.get("tenant"),
            sender=record.get("sender"),
            pending=tuple(record.get("pending", ())),
            released_by=record.get("released_by"),
            released=tuple(record.get("released", ())),
        )


def message_key(provider: str, message_id: str) -> str:
    """The message table's key, e.g. "maileroo:<abc@example.com>"."""
    return f"{provider}:{message_id}"


def route(
    event: EmailEvent, info: MessageInfo | None, policy: Policy
) -> tuple[MessageInfo | None, list[EmailEvent], list[tuple[EmailEvent, str]]]:
    """(the info to store, or None to leave the table as it is; the events ready to apply,
    with recipient and delivered_at filled in; the events to dead-letter, with the reason).

    `info` is the table's entry for the event's message (None if absent or if the event has
    no message id). `event` is never modified: filled-in events are copies.
    """
    if not event.get("message_id"):
        if event.get("recipient"):
            return None, [event], []
        return None, [], [(event, UNRESOLVABLE)]
    current = info or MessageInfo()
    updated = _record_delivery(_record_recipient(current, event), event)
    updated = _record_first(_record_first(updated, event, "tenant"), event, "sender")
    if updated.recipient is None:
        return _park(event, current, updated, policy)
    if updated.pending:
        updated = replace(
            updated, pending=(), released_by=event["event_id"], released=updated.pending
        )
        waiting = updated.released
    elif event["event_id"] == updated.released_by:
        waiting = updated.released  # a redelivery of the releasing event: release again
    else:
        waiting = ()
    ready = [_resolved(parked, updated) for parked in (*waiting, event)]
    return _if_changed(updated, current), ready, []


def _record_recipient(info: MessageInfo, event: EmailEvent) -> MessageInfo:
    recipient = event.get("recipient")
    if info.recipient is not None or not recipient:
        return info
    return replace(info, recipient=recipient)


def _record_first(
    info: MessageInfo, event: EmailEvent, name: Literal["tenant", "sender"]
) -> MessageInfo:
    """`info` with the event's `name` unless it knows one already: the first one wins."""
    value = event.get(name)
    if getattr(info, name) is not None or not value:
        return info
    first: dict[str, Any] = {name: value}
    return replace(info, **first)


def _record_delivery(info: MessageInfo, event: EmailEvent) -> MessageInfo:
    if event["event_type"] != EventType.DELIVERED:
        return info
    occurred_at = event["occurred_at"]
    if info.delivered_at is not None and info.delivered_at <= occurred_at:
        return info
    return replace(info, delivered_at=occurred_at)


def _park(
    event: EmailEvent, current: MessageInfo, updated: MessageInfo, policy: Policy
) -> tuple[MessageInfo | None, list[EmailEvent], list[tuple[EmailEvent, str]]]:
    event_id = event["event_id"]
    if any(waiting["event_id"] == event_id for waiting in updated.pending):
        return _if_changed(updated, current), [], []
    if len(updated.pending) >= policy.max_pending_per_message:
        reason = (
            f"message {event['message_id']} already has {len(updated.pending)} events "
            "awaiting its recipient (max_pending_per_message)"
        )
        return _if_changed(updated, current), [], [(event, reason)]
    return replace(updated, pending=(*updated.pending, event)), [], []


def _if_changed(updated: MessageInfo, current: MessageInfo) -> MessageInfo | None:
    """`updated`, or None when the step changed nothing (the `_record_*` steps return their
    input unchanged, so identity says it without comparing parked events)."""
    return None if updated is current else updated


def _resolved(event: EmailEvent, info: MessageInfo) -> EmailEvent:
    """A copy of `event` with the message's recipient, tenant and sender (unless it names its
    own) and delivery."""
    return {
        **event,
        "recipient": event.get("recipient") or info.recipient,
        "tenant": event.get("tenant") or info.tenant,
        "sender": event.get("sender") or info.sender,
        "delivered_at": info.delivered_at,
    }
