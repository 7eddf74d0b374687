"""Recipient resolution: the message table fills in recipients and delivery times."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from typing import Any

import orjson

from mailstream.events import new_event
from mailstream.messages import UNRESOLVABLE, MessageInfo, message_key, route
from mailstream.policy import default_policy
from mailstream.recipient import apply

T0 = 1_710_545_542_000  # Maileroo's sample delivery, 2024-03-15T23:32:22Z
SECOND = 1_000
MESSAGE = "1234567890abcdef@examplemail.com"
RECIPIENT = "jane.doe@example.com"
POLICY = default_policy()
_event_ids = itertools.count(1)


def event(
    event_type: str, at: int, recipient: str | None = None, message_id: str | None = MESSAGE
) -> dict[str, Any]:
    return new_event(
        event_id=f"evt-{next(_event_ids)}",
        provider="maileroo",
        event_type=event_type,
        occurred_at=at,
        recipient=recipient,
        message_id=message_id,
    )


def test_message_key() -> None:
    assert message_key("maileroo", "abc@x") == "maileroo:abc@x"


def test_an_event_naming_its_recipient_records_it() -> None:
    sent = event("SENT", T0, RECIPIENT)
    original = copy.deepcopy(sent)
    info, ready, dead = route(sent, None, POLICY)
    assert info == MessageInfo(recipient=RECIPIENT)
    assert ready == [original | {"delivered_at": None}]
    assert dead == []
    assert sent == original  # the input is never modified


def test_a_click_before_its_delivery_waits_for_it() -> None:
    click = event("CLICKED", T0 + 3 * SECOND)
    info, ready, dead = route(click, None, POLICY)
    assert info == MessageInfo(pending=(click,))
    assert (ready, dead) == ([], [])

    delivered = event("DELIVERED", T0, RECIPIENT)
    info, ready, dead = route(delivered, info, POLICY)
    assert info == MessageInfo(
        recipient=RECIPIENT, delivered_at=T0, released_by=delivered["event_id"], released=(click,)
    )
    assert [each["event_id"] for each in ready] == [click["event_id"], delivered["event_id"]]
    assert all(each["recipient"] == RECIPIENT for each in ready)
    assert all(each["delivered_at"] == T0 for each in ready)
    assert dead == []


def test_the_released_click_is_judged_against_the_delivery() -> None:
    scanner_click = event("CLICKED", T0 + 3 * SECOND)
    human_click = event("CLICKED", T0 + 35 * SECOND)
    info, _, _ = route(scanner_click, None, POLICY)
    info, _, _ = route(human_click, info, POLICY)
    _, ready, _ = route(event("DELIVERED", T0, RECIPIENT), info, POLICY)
    state = None
    for each in ready:
        state = apply(state, each, POLICY)
    assert state is not None
    assert (state.machine_clicks, state.clicks, state.score, state.delivered) == (1, 1, 15, 1)


def test_later_events_are_filled_in_from_the_table() -> None:
    info = MessageInfo(recipient=RECIPIENT, delivered_at=T0)
    opened = event("OPENED", T0 + 60 * SECOND)
    new_info, ready, dead = route(opened, info, POLICY)
    assert new_info is None  # nothing to store
    assert ready == [opened | {"recipient": RECIPIENT, "delivered_at": T0}]
    assert dead == []


def test_parked_events_are_released_in_arrival_order() -> None:
    parked = [event("OPENED", T0 + n) for n in (30, 10, 20)]
    info = None
    for each in parked:
        info, _, _ = route(each, info, POLICY)
    _, ready, _ = route(event("DELIVERED", T0, RECIPIENT), info, POLICY)
    assert [each["event_id"] for each in ready[:3]] == [each["event_id"] for each in parked]


def test_the_first_recipient_wins() -> None:
    info, _, _ = route(event("SENT", T0, RECIPIENT), None, POLICY)
    new_info, ready, _ = route(event("DELIVERED", T0, "other@example.com"), info, POLICY)
    assert new_info == MessageInfo(recipient=RECIPIENT, delivered_at=T0)
    assert ready[0]["recipient"] == "other@example.com"  # an event keeps its own address


def test_the_earliest_delivery_wins() -> None:
    info = MessageInfo(recipient=RECIPIENT, delivered_at=T0 + 10)
    earlier, ready, _ = route(event("DELIVERED", T0, RECIPIENT), info, POLICY)
    assert earlier == MessageInfo(recipient=RECIPIENT, delivered_at=T0)
    assert ready[0]["delivered_at"] == T0
    later, ready, _ = route(event("DELIVERED", T0 + 20, RECIPIENT), earlier, POLICY)
    assert later is None
    assert ready[0]["delivered_at"] == T0


def test_a_delivery_without_recipient_is_recorded_while_it_waits() -> None:
    delivered = event("DELIVERED", T0)
    info, ready, dead = route(delivered, None, POLICY)
    assert info == MessageInfo(delivered_at=T0, pending=(delivered,))
    assert (ready, dead) == ([], [])


def test_no_recipient_and_no_message_id_is_a_dead_letter() -> None:
    orphan = event("OPENED", T0, message_id=None)
    assert route(orphan, None, POLICY) == (None, [], [(orphan, UNRESOLVABLE)])


def test_a_recipient_without_message_id_is_ready_as_it_is() -> None:
    reply = event("REPLIED", T0, RECIPIENT, message_id=None)
    assert route(reply, None, POLICY) == (None, [reply], [])


def test_a_redelivered_parked_event_is_parked_once() -> None:
    click = event("CLICKED", T0)
    info, _, _ = route(click, None, POLICY)
    assert route(dict(click), info, POLICY) == (None, [], [])


def test_too_many_waiting_events_overflow_to_dead_letters() -> None:
    policy = replace(POLICY, max_pending_per_message=2)
    info = None
    for n in range(2):
        info, _, dead = route(event("OPENED", T0 + n), info, policy)
        assert dead == []
    overflow = event("OPENED", T0 + 2)
    new_info, ready, dead = route(overflow, info, policy)
    assert (new_info, ready) == (None, [])
    assert len(dead) == 1 and dead[0][0] is overflow
    assert "max_pending_per_message" in dead[0][1]


def test_records_round_trip_through_json() -> None:
    click = event("CLICKED", T0)
    info = MessageInfo(recipient=None, delivered_at=T0, pending=(click,))
    stored = orjson.loads(orjson.dumps(info.to_record()))
    assert MessageInfo.from_record(stored) == info


def test_a_redelivered_releasing_event_releases_the_parked_events_again() -> None:
    """After a crash between the table write and the sends, the releasing event comes back;
    the events it released must come out again (the state step drops true duplicates)."""
    click = event("CLICKED", T0 + 3 * SECOND)
    delivered = event("DELIVERED", T0, RECIPIENT)
    parked, _, _ = route(click, None, POLICY)
    assert parked is not None
    released, ready, _ = route(delivered, parked, POLICY)
    assert released is not None
    assert [e["event_id"] for e in ready] == [click["event_id"], delivered["event_id"]]
    stored = MessageInfo.from_record(orjson.loads(orjson.dumps(released.to_record())))
    unchanged, again, dead = route(delivered, stored, POLICY)
    assert unchanged is None
    assert [e["event_id"] for e in again] == [click["event_id"], delivered["event_id"]]
    assert again[0]["recipient"] == RECIPIENT
    assert dead == []
    opened = event("OPENED", T0 + 60 * SECOND)
    _, later, _ = route(opened, stored, POLICY)
    assert [e["event_id"] for e in later] == [opened["event_id"]], (
        "only the releasing event re-releases"
    )
