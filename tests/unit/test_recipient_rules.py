"""The rules: scoring, machine detection, suppression, idempotency and event order."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstream.codec import strip_logical_types
from mailstream.events import new_event
from mailstream.policy import Policy, default_policy
from mailstream.recipient import (
    RecipientState,
    RecipientStatus,
    SuppressionError,
    SuppressionReason,
    apply,
    is_machine,
    lift_suppression,
    suppress_manually,
    suppression_record,
)
from mailstream.schemas import load_schema

T0 = 1_695_222_842_000  # 2023-09-20T15:14:02Z
SECOND = 1_000
DAY = 86_400_000
LEAD = "lead@prospect.com"
HUMAN_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36"
)
POLICY = default_policy()
_event_ids = itertools.count(1)


def event(event_type: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "event_id": f"evt-{next(_event_ids)}",
        "provider": "mailbot",
        "recipient": LEAD,
        "message_id": "msg-1",
    }
    if event_type in ("OPENED", "CLICKED"):
        defaults["user_agent"] = HUMAN_UA
    if event_type == "CLICKED":
        defaults["url"] = "https://yourapp.example.com/onepager"
    return new_event(**(defaults | {"event_type": event_type, "occurred_at": at} | fields))


def bounce(bounce_class: str | None, at: int = T0) -> dict[str, Any]:
    return event("BOUNCED", at, bounce_class=bounce_class)


def run(events: Iterable[dict[str, Any]], policy: Policy = POLICY) -> RecipientState:
    state = None
    for each in events:
        state = apply(state, each, policy)
    assert state is not None
    return state


def opens(count: int, start: int = T0) -> list[dict[str, Any]]:
    return [event("OPENED", start + n * SECOND) for n in range(count)]


# --- scoring -----------------------------------------------------------------------------


def test_open_points_first_then_third_then_capped() -> None:
    scores = []
    state = None
    for each in opens(5):
        state = apply(state, each, POLICY)
        scores.append(state.score)
    assert scores == [5, 5, 15, 15, 15]
    assert state is not None and state.opens == 5


def test_clicks_and_replies_score_deliveries_do_not() -> None:
    state = run([event("DELIVERED"), event("CLICKED"), event("CLICKED"), event("REPLIED")])
    assert state.score == 15 + 15 + 30
    assert (state.delivered, state.clicks, state.replies) == (1, 2, 1)


def test_signals_set_the_last_timestamps() -> None:
    state = run([event("OPENED", T0), event("CLICKED", T0 + 10), event("REPLIED", T0 + 20)])
    assert state.last_open_at == T0
    assert state.last_click_at == T0 + 10
    assert state.last_signal_at == T0 + 20
    assert state.updated_at == T0 + 20


def test_exactly_thirty_days_of_silence_keeps_the_score() -> None:
    state = run([event("CLICKED", T0), event("OPENED", T0 + 30 * DAY)])
    assert state.score == 15 + 5


def test_thirty_days_and_a_millisecond_reset_score_and_open_bonus_count() -> None:
    before = run([*opens(3), event("CLICKED", T0 + 3 * SECOND)])
    assert before.score == 30
    silent_until = before.last_signal_at + 30 * DAY + 1
    state = apply(before, event("OPENED", silent_until), POLICY)
    assert state.score == 5  # a first open again, after the reset
    assert state.opens == 4  # the lifetime total is kept
    assert state.opens_since_reset == 1


def test_any_event_after_the_silence_resets_the_score() -> None:
    state = run([event("CLICKED", T0), event("DELIVERED", T0 + 31 * DAY)])
    assert state.score == 0
    assert state.last_signal_at == T0


def test_an_older_event_never_resets_the_score() -> None:
    state = run([event("CLICKED", T0 + 40 * DAY), event("OPENED", T0)])
    assert state.score == 15 + 5
    assert state.last_signal_at == T0 + 40 * DAY


def test_events_out_of_order_keep_the_latest_timestamps() -> None:
    state = run(
        [
            event("OPENED", T0 + 50),
            event("OPENED", T0 + 10),
            event("CLICKED", T0 + 40),
            event("CLICKED", T0 + 20),
            event("DEFERRED", T0 + 5),
        ]
    )
    assert state.last_open_at == T0 + 50
    assert state.last_click_at == T0 + 40
    assert state.last_signal_at == T0 + 50
    assert state.updated_at == T0 + 50
    assert state.score == 5 + 15 + 15


# --- machine opens and clicks ------------------------------------------------------------


def test_provider_flagged_opens_and_clicks_are_machine() -> None:
    state = run(
        [
            event("OPENED", provider_flagged_machine=True),
            event("CLICKED", provider_flagged_machine=True),
        ]
    )
    assert (state.machine_opens, state.machine_clicks) == (1, 1)
    assert (state.opens, state.clicks, state.score) == (0, 0, 0)
    assert state.last_signal_at is None and state.last_open_at is None


@pytest.mark.parametrize("user_agent", ["Mozilla/5.0", "Mimecast URL Protect", "curl/8.4.0"])
def test_listed_user_agents_are_machine(user_agent: str) -> None:
    state = run([event("OPENED", user_agent=user_agent), event("CLICKED", user_agent=user_agent)])
    assert (state.machine_opens, state.machine_clicks, state.score) == (1, 1, 0)


@pytest.mark.parametrize(
    ("delay", "machine"),
    [(-1, True), (0, True), (4_999, True), (5_000, False), (60_000, False)],
)
def test_the_delivery_window(delay: int, machine: bool) -> None:
    opened = event("OPENED", T0 + delay, delivered_at=T0)
    assert is_machine(opened, POLICY) is machine


def test_without_a_delivery_time_only_flags_and_user_agents_count() -> None:
    assert not is_machine(event("OPENED", delivered_at=None), POLICY)
    assert not is_machine(event("CLICKED", user_agent=None), POLICY)


def test_a_machine_event_scores_nothing_but_is_remembered() -> None:
    opened = event("OPENED", T0 + 1, delivered_at=T0)
    state = run([opened])
    assert state.machine_opens == 1
    assert state.recent_event_ids == (opened["event_id"],)
    assert apply(state, opened, POLICY) is state


# --- unsubscribe, complaints and bounces ---------------------------------------------------


def test_a_human_unsubscribe_click_suppresses_and_scores_nothing() -> None:
    click = event("CLICKED", T0 + DAY, url="https://yourapp.example.com/Unsubscribe?u=42")
    state = run([event("OPENED"), click])
    assert state.status is RecipientStatus.ACTIVE  # an unsubscribe is TENANT-scoped
    view = state.tenants[POLICY.default_tenant]
    assert view.status is RecipientStatus.SUPPRESSED
    assert view.suppression_reason is SuppressionReason.UNSUBSCRIBE
    assert view.suppressed_at == T0 + DAY
    assert view.suppression_event_id == click["event_id"]
    assert state.suppressed_for(None) and state.suppressed_for(POLICY.default_tenant)
    assert (state.score, state.clicks, state.unsubscribes) == (5, 0, 1)
    assert state.last_click_at is None


def test_a_machine_unsubscribe_click_does_not_unsubscribe() -> None:
    scanner = event("CLICKED", url="https://x.example/optout", user_agent="Barracuda LinkProtect")
    state = run([scanner])
    assert state.status is RecipientStatus.ACTIVE
    assert (state.machine_clicks, state.unsubscribes) == (1, 0)


def test_an_unsubscribe_event_suppresses() -> None:
    state = run([event("UNSUBSCRIBED")])
    assert state.tenants[POLICY.default_tenant].suppression_reason is SuppressionReason.UNSUBSCRIBE
    assert (state.unsubscribes, state.score) == (1, 0)


def test_a_complaint_suppresses() -> None:
    state = run([event("COMPLAINED")])
    assert state.suppression_reason is None  # a complaint is TENANT-scoped
    assert state.tenants[POLICY.default_tenant].suppression_reason is SuppressionReason.COMPLAINT
    assert state.complaints == 1


def test_a_hard_bounce_suppresses_at_once() -> None:
    hard = bounce("HARD")
    state = run([hard])
    assert state.suppression_reason is SuppressionReason.HARD_BOUNCE
    assert state.suppression_event_id == hard["event_id"]
    assert state.hard_bounces == 1


def test_a_hard_bounce_after_a_delivery_suppresses() -> None:
    """Inboxroad's remote bounce (rb) arrives after the delivery (d) of the same message."""
    state = run([event("DELIVERED", T0), bounce("HARD", T0 + 60 * SECOND)])
    assert state.delivered == 1
    assert state.suppression_reason is SuppressionReason.HARD_BOUNCE


def test_the_fifth_soft_bounce_suppresses() -> None:
    four = run([bounce("SOFT", T0 + n) for n in range(4)])
    assert four.status is RecipientStatus.ACTIVE and four.soft_bounces == 4
    fifth = apply(four, bounce("SOFT", T0 + 5), POLICY)
    assert fifth.suppression_reason is SuppressionReason.SOFT_BOUNCE_LIMIT
    assert fifth.soft_bounces == 5


def test_a_delivery_resets_the_soft_bounce_count() -> None:
    softs = [bounce("SOFT", T0 + n) for n in range(4)]
    delivered = event("DELIVERED", T0 + 10)
    more_softs = [bounce("SOFT", T0 + 20 + n) for n in range(4)]
    state = run([*softs, delivered, *more_softs])
    assert state.status is RecipientStatus.ACTIVE
    assert state.soft_bounces == 4
    state = apply(state, bounce("SOFT", T0 + 30), POLICY)
    assert state.suppression_reason is SuppressionReason.SOFT_BOUNCE_LIMIT


def test_the_delivery_reset_can_be_switched_off() -> None:
    policy = replace(POLICY, delivery_resets_soft_bounces=False)
    softs = [bounce("SOFT", T0 + n) for n in range(4)]
    state = run([*softs, event("DELIVERED", T0 + 10), bounce("SOFT", T0 + 20)], policy)
    assert state.suppression_reason is SuppressionReason.SOFT_BOUNCE_LIMIT


@pytest.mark.parametrize(
    ("bounce_class", "counter"),
    [
        ("EXPIRED", "expired"),
        ("BLOCK", "blocked"),
        ("UNDETERMINED", "undetermined_bounces"),
        (None, "undetermined_bounces"),
    ],
)
def test_other_bounces_are_counted_and_never_suppress(
    bounce_class: str | None, counter: str
) -> None:
    state = run([bounce(bounce_class, T0 + n) for n in range(10)])
    assert getattr(state, counter) == 10
    assert state.status is RecipientStatus.ACTIVE
    assert (state.soft_bounces, state.hard_bounces) == (0, 0)


def test_a_rejection_is_counted_and_does_not_suppress() -> None:
    state = run([event("REJECTED", bounce_class="BLOCK")])
    assert state.rejected == 1
    assert state.blocked == 0
    assert state.status is RecipientStatus.ACTIVE


@pytest.mark.parametrize("event_type", ["DEFERRED", "QUEUED", "SENT", "UNKNOWN"])
def test_events_that_count_nothing_still_create_the_state(event_type: str) -> None:
    deferred = event(event_type, bounce_class="SOFT")
    state = apply(None, deferred, POLICY)
    assert state.recipient == LEAD
    fresh = RecipientState(LEAD, updated_at=T0)
    assert state.to_record() == replace(fresh, tenants={POLICY.default_tenant: fresh}).to_record()


# --- sticky suppression and operator actions -----------------------------------------------


def test_suppression_is_sticky_counters_still_move() -> None:
    state = run(
        [
            bounce("HARD", T0),
            event("DELIVERED", T0 + 1),
            event("OPENED", T0 + 2),
            event("CLICKED", T0 + 3),
            event("UNSUBSCRIBED", T0 + 4),
        ]
    )
    assert state.status is RecipientStatus.SUPPRESSED
    assert state.suppression_reason is SuppressionReason.HARD_BOUNCE
    assert state.suppressed_at == T0
    assert (state.opens, state.clicks, state.unsubscribes, state.score) == (1, 1, 1, 20)


def test_a_complaint_replaces_an_earlier_cause_and_nothing_replaces_it() -> None:
    complaint = event("COMPLAINED", T0 + 1)
    state = run([event("UNSUBSCRIBED", T0), complaint, bounce("HARD", T0 + 2)])
    view = state.tenants[POLICY.default_tenant]
    assert view.suppression_reason is SuppressionReason.COMPLAINT
    assert view.suppression_event_id == complaint["event_id"]
    assert view.suppressed_at == T0 + 1
    assert state.suppression_reason is SuppressionReason.HARD_BOUNCE  # global, beside it


def test_manual_suppression_and_lift() -> None:
    active = run([bounce("SOFT", T0), bounce("SOFT", T0 + 1)])
    suppressed = suppress_manually(active, SuppressionReason.MANUAL, T0 + 10, "asked by phone")
    assert suppressed.suppression_reason is SuppressionReason.MANUAL
    assert suppressed.suppressed_at == T0 + 10
    assert suppressed.suppression_event_id is None
    assert suppressed.suppression_note == "asked by phone"
    lifted = lift_suppression(suppressed, T0 + 20)
    assert lifted.status is RecipientStatus.ACTIVE
    assert (lifted.suppression_reason, lifted.suppressed_at, lifted.suppression_note) == (
        None,
        None,
        None,
    )
    assert lifted.soft_bounces == 0
    assert lifted.updated_at == T0 + 20


def test_lifting_an_active_recipient_changes_nothing() -> None:
    state = run([event("OPENED")])
    assert lift_suppression(state, T0 + 1) is state


def test_lifting_a_complaint_needs_force() -> None:
    complained = run([event("COMPLAINED")]).tenants[POLICY.default_tenant]
    with pytest.raises(SuppressionError, match="force"):
        lift_suppression(complained, T0 + 1)
    with pytest.raises(SuppressionError, match="force"):
        suppress_manually(complained, SuppressionReason.MANUAL, T0 + 1)
    assert lift_suppression(complained, T0 + 1, force=True).status is RecipientStatus.ACTIVE
    manual = suppress_manually(complained, SuppressionReason.MANUAL, T0 + 1, force=True)
    assert manual.suppression_reason is SuppressionReason.MANUAL


def test_after_a_lift_a_new_cause_suppresses_again() -> None:
    lifted = lift_suppression(run([bounce("HARD", T0)]), T0 + 1)
    assert apply(lifted, bounce("HARD", T0 + 2), POLICY).status is RecipientStatus.SUPPRESSED


def test_suppression_records() -> None:
    hard = bounce("HARD")
    state = run([hard])
    assert suppression_record(state) == {
        "recipient": LEAD,
        "reason": "HARD_BOUNCE",
        "since": T0,
        "event_id": hard["event_id"],
        "source": "event",
        "actor": None,
        "note": None,
        "scope": "GLOBAL",
        "tenant": None,
    }
    manual = suppress_manually(RecipientState(LEAD), SuppressionReason.MANUAL, T0, "note")
    record = suppression_record(manual, actor="ops@example.com")
    assert record is not None
    assert (record["source"], record["actor"]) == ("operator", "ops@example.com")
    assert record["note"] == "note"
    assert suppression_record(RecipientState(LEAD)) is None


# --- idempotency and guards --------------------------------------------------------------


def test_the_same_event_twice_returns_the_same_object() -> None:
    for each in [event("OPENED"), event("CLICKED"), bounce("SOFT"), event("DEFERRED")]:
        once = apply(None, each, POLICY)
        assert apply(once, each, POLICY) is once


def test_a_duplicate_after_other_events_changes_nothing() -> None:
    first = event("CLICKED", T0)
    state = run([first, event("OPENED", T0 + 1), bounce("SOFT", T0 + 2)])
    assert apply(state, first, POLICY) is state


def test_the_memory_of_event_ids_is_bounded() -> None:
    policy = replace(POLICY, dedupe_window=3)
    first, *others = opens(4)
    state = run([first, *others], policy)
    assert state.recent_event_ids == tuple(each["event_id"] for each in others)
    assert apply(state, first, policy) is not state  # forgotten: counted again


def test_an_event_without_recipient_is_refused() -> None:
    with pytest.raises(ValueError, match="no recipient"):
        apply(None, event("OPENED", recipient=None), POLICY)


def test_an_event_of_another_recipient_is_refused() -> None:
    with pytest.raises(ValueError, match=r"other@example\.com"):
        apply(RecipientState(LEAD), event("OPENED", recipient="other@example.com"), POLICY)


# --- records -----------------------------------------------------------------------------


def test_records_round_trip() -> None:
    state = run([event("OPENED"), event("COMPLAINED", T0 + 1)])
    record = state.to_record()
    assert "recent_event_ids" not in record
    assert record["status"] == "SUPPRESSED" and record["suppression_reason"] == "COMPLAINT"
    published = RecipientState.from_record(record)
    assert published.to_record() == record, "what is published reads back as published"
    assert replace(published, tenants={}) == replace(state, recent_event_ids=(), tenants={})
    assert RecipientState.from_record(state.to_table_record()) == state


def test_the_published_record_fits_the_avro_schema() -> None:
    state = run([event("OPENED"), bounce("HARD", T0 + 1)])
    schema = fastavro.parse_schema(strip_logical_types(load_schema("recipient_state")))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, state.to_record())
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, schema, None)
    assert RecipientState.from_record(decoded).to_record() == state.to_record()


# --- properties --------------------------------------------------------------------------

EVENT_TYPES = [
    "DELIVERED", "DEFERRED", "BOUNCED", "REJECTED", "OPENED", "CLICKED",
    "COMPLAINED", "UNSUBSCRIBED", "REPLIED", "SENT",
]  # fmt: skip


@st.composite
def random_events(draw: st.DrawFn) -> dict[str, Any]:
    occurred_at = T0 + draw(st.integers(0, 90)) * DAY + draw(st.integers(-10_000, 10_000))
    return new_event(
        event_id=f"evt-{draw(st.integers(0, 10**9))}",
        provider="maileroo",
        event_type=draw(st.sampled_from(EVENT_TYPES)),
        recipient=LEAD,
        occurred_at=occurred_at,
        bounce_class=draw(st.sampled_from([None, "HARD", "SOFT", "EXPIRED", "BLOCK"])),
        url=draw(st.sampled_from([None, "https://x.example/p", "https://x.example/unsubscribe"])),
        user_agent=draw(st.sampled_from([None, HUMAN_UA, "Mozilla/5.0"])),
        provider_flagged_machine=draw(st.booleans()),
        delivered_at=draw(st.sampled_from([None, occurred_at - 2_000, occurred_at - 60_000])),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(random_events(), min_size=1, max_size=40), st.data())
def test_reapplying_any_applied_event_changes_nothing(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    state = None
    for each in events:
        state = apply(state, each, POLICY)
        assert state.score >= 0
    assert state is not None
    for again in data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=10)):
        assert apply(state, again, POLICY) is state
