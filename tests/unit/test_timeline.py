"""Event time, not arrival order: any arrival order inside the reorder window gives the state of
the event-time fold, field for field; an event later than the window is applied and counted."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailstream.commands import CommandAction, CommandError, OperatorCommand
from mailstream.events import BounceClass, EventType, new_event
from mailstream.policy import default_policy
from mailstream.recipient import RecipientStatus, SuppressionReason
from mailstream.timeline import (
    Timeline,
    add_command,
    add_event,
    command_entry,
    event_entry,
    fold,
)
from mailstream.timeline import order as entry_order

POLICY = default_policy()
ANN = "ann@example.com"
T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR

KINDS: list[tuple[EventType, BounceClass | None]] = [
    (EventType.DELIVERED, None),
    (EventType.OPENED, None),
    (EventType.CLICKED, None),
    (EventType.REPLIED, None),
    (EventType.BOUNCED, BounceClass.SOFT),
    (EventType.BOUNCED, BounceClass.SOFT),
    (EventType.BOUNCED, BounceClass.HARD),
    (EventType.BOUNCED, BounceClass.BLOCK),
    (EventType.COMPLAINED, None),
    (EventType.UNSUBSCRIBED, None),
    (EventType.SENT, None),
]


def event(number: int, kind: int, at: int, url: str | None = None) -> dict[str, Any]:
    event_type, bounce_class = KINDS[kind]
    return dict(
        new_event(
            event_id=f"e{number}",
            provider="mailbot",
            event_type=event_type,
            occurred_at=at,
            received_at=at + 1_000,
            recipient=ANN,
            message_id=f"m{number % 3}",
            bounce_class=bounce_class,
            url=url if event_type is EventType.CLICKED else None,
        )
    )


def command(number: int, action: CommandAction, at: int, force: bool) -> OperatorCommand:
    return OperatorCommand(
        action=action,
        recipient=ANN,
        actor="ops",
        requested_at=at,
        reason=SuppressionReason.MANUAL if action is CommandAction.SUPPRESS else None,
        force=force,
        command_id=f"c{number}",
    )


Item = dict[str, Any] | OperatorCommand

# Streams of a recipient's events (and a few operator commands), hours to a month apart: the
# soft-bounce limit, deliveries between soft bounces, the 30-day reset, first causes and lifts.
items = st.lists(
    st.tuples(
        st.integers(0, len(KINDS) + 1),  # the last two: a suppression, a lift
        st.integers(0, 40 * DAY),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


def stream(drawn: list[tuple[int, int, bool]]) -> list[Item]:
    made: list[Item] = []
    for number, (kind, offset, flag) in enumerate(drawn):
        at = T0 + offset
        if kind == len(KINDS):
            made.append(command(number, CommandAction.SUPPRESS, at, flag))
        elif kind == len(KINDS) + 1:
            made.append(command(number, CommandAction.LIFT, at, flag))
        else:
            url = "https://example.com/unsubscribe" if flag else "https://example.com/offer"
            made.append(event(number, kind, at, url))
    return made


def arrive(
    items_in_order: list[Item], policy: Any = POLICY, refused: list[Item] | None = None
) -> Timeline | None:
    """The items added in this order; the commands the rules refused go to `refused`."""
    timeline: Timeline | None = None
    for item in items_in_order:
        try:
            if isinstance(item, OperatorCommand):
                timeline = add_command(timeline, item, policy)
            else:
                timeline = add_event(timeline, item, policy)
        except CommandError:
            if refused is not None:  # refused where it falls: dead-lettered, not kept
                refused.append(item)
    return timeline


def event_time_fold(items_in_order: list[Item]) -> Any:
    """The definition: the rules over the entries in event-time order, refused commands
    skipped."""
    entries = [
        command_entry(item) if isinstance(item, OperatorCommand) else event_entry(item, POLICY)
        for item in items_in_order
    ]
    return fold(ANN, entries, POLICY)


WIDE = replace(POLICY, reorder_window_events=64, reorder_window_hours=24 * 60)


@settings(max_examples=300, deadline=None)
@given(drawn=items, seed=st.integers(0, 2**32 - 1))
@example(drawn=[(0, 0, False)] * 6 + [(8, 0, False), (11, 2, False), (11, 1, True)], seed=1)
def test_any_arrival_order_inside_the_window_gives_the_event_time_fold(
    drawn: list[tuple[int, int, bool]], seed: int
) -> None:
    made = stream(drawn)
    shuffled = list(made)
    random.Random(seed).shuffle(shuffled)
    refused: list[Item] = []
    arrived = arrive(shuffled, WIDE, refused)
    # A command refused when it arrives is answered with a dead letter and never kept, even if
    # a forced command that arrives later would have allowed it at its place in time.
    expected = event_time_fold([item for item in made if item not in refused])
    assert arrived is not None
    assert arrived.state.to_record() == expected.to_record()
    assert arrived.state.late_events == 0


@settings(max_examples=200, deadline=None)
@given(drawn=items, seed=st.integers(0, 2**32 - 1))
def test_the_default_window_converges_while_the_log_stays_bounded(
    drawn: list[tuple[int, int, bool]], seed: int
) -> None:
    made = stream(drawn)
    in_order = sorted(made, key=lambda item: (at_of(item), name_of(item)))
    refused: list[Item] = []
    arrived = arrive(in_order, POLICY, refused)
    assert arrived is not None
    kept = [item for item in made if item not in refused]
    assert arrived.state.to_record() == event_time_fold(kept).to_record()
    assert len(arrived.log) <= POLICY.reorder_window_events
    events = [entry["occurred_at"] for entry in arrived.log if "command" not in entry]
    oldest = min((entry["occurred_at"] for entry in arrived.log), default=None)
    assert not events or oldest is None or max(events) - oldest <= POLICY.reorder_window_ms


def at_of(item: Item) -> int:
    return item.requested_at if isinstance(item, OperatorCommand) else int(item["occurred_at"])


def name_of(item: Item) -> str:
    return item.command_id if isinstance(item, OperatorCommand) else str(item["event_id"])


def test_soft_bounces_around_a_delivery_count_by_event_time() -> None:
    soft = [event(n, 4, T0 + n * HOUR) for n in (0, 1, 3, 4)]
    delivery = event(2, 0, T0 + 2 * HOUR)
    live = arrive([*soft, delivery])  # the delivery arrives last, its time between the bounces
    assert live is not None
    assert live.state.status is RecipientStatus.ACTIVE
    assert live.state.soft_bounces == 2
    assert live.state.to_record() == event_time_fold([*soft, delivery]).to_record()


def test_a_late_delivery_undoes_a_soft_bounce_limit_suppression() -> None:
    soft = [event(n, 4, T0 + n * HOUR) for n in range(POLICY.soft_bounce_limit + 1) if n != 1]
    before = arrive(soft)
    assert before is not None and before.state.status is RecipientStatus.SUPPRESSED
    after = add_event(before, event(1, 0, T0 + HOUR), POLICY)
    assert after.state.status is RecipientStatus.ACTIVE


def test_an_earlier_cause_replaces_a_later_one() -> None:
    unsubscribe = event(1, 9, T0 + 2 * HOUR)
    hard = event(2, 6, T0 + HOUR)
    timeline = arrive([unsubscribe, hard])
    assert timeline is not None
    assert timeline.state.suppression_reason is SuppressionReason.HARD_BOUNCE
    assert timeline.state.suppression_event_id == "e2"


def test_a_lift_after_a_bounce_stays_lifted_whatever_arrives_first() -> None:
    hard = event(1, 6, T0)
    lift = command(2, CommandAction.LIFT, T0 + HOUR, force=False)
    for order in ([hard, lift], [lift, hard]):
        timeline = arrive(order)
        assert timeline is not None
        assert timeline.state.status is RecipientStatus.ACTIVE, order


def test_a_lift_of_a_complaint_without_force_is_refused_where_it_falls() -> None:
    complaint = arrive([event(1, 8, T0)])
    lift = replace(command(2, CommandAction.LIFT, T0 + HOUR, force=False), tenant="default")
    with pytest.raises(CommandError):
        add_command(complaint, lift, POLICY)


def test_an_event_later_than_the_window_is_applied_and_counted() -> None:
    narrow = replace(POLICY, reorder_window_events=2)
    timeline = arrive([event(n, 1, T0 + (n + 1) * DAY) for n in range(4)], narrow)
    assert timeline is not None and len(timeline.log) == 2
    late = add_event(timeline, event(9, 3, T0), narrow)
    assert late.state.late_events == 1
    assert late.state.replies == 1
    assert add_event(late, event(9, 3, T0), narrow) is late  # a repeat changes nothing


def test_a_repeat_changes_nothing_in_the_log_or_before_it() -> None:
    first = arrive([event(1, 1, T0), event(2, 1, T0 + HOUR)])
    assert first is not None
    assert add_event(first, event(1, 1, T0), POLICY) is first
    assert add_command(first, command(3, CommandAction.LIFT, T0, False), POLICY) is not first


def test_a_table_record_round_trips_and_bare_states_of_older_tables_are_read() -> None:
    timeline = arrive([event(1, 0, T0), command(2, CommandAction.SUPPRESS, T0 + HOUR, False)])
    assert timeline is not None
    assert Timeline.from_record(timeline.to_table_record()) == timeline
    legacy = Timeline.from_record(timeline.state.to_table_record())
    assert legacy.state == timeline.state and legacy.log == ()


def test_the_case_hypothesis_found_a_refused_command_stays_refused() -> None:
    """A complaint; a suppression of the same tenant without force, refused; an earlier forced
    one arriving after it: the refused one stays out, as its dead letter said."""
    complaint = event(0, 8, T0)
    tenant = POLICY.default_tenant
    forced = replace(command(1, CommandAction.SUPPRESS, T0 + 1, force=True), tenant=tenant)
    unforced = replace(command(2, CommandAction.SUPPRESS, T0 + 2, force=False), tenant=tenant)
    refused: list[Item] = []
    timeline = arrive([complaint, unforced, forced], POLICY, refused)
    assert refused == [unforced]
    assert timeline is not None
    view = timeline.state.tenants[tenant]
    assert view.suppression_reason is SuppressionReason.MANUAL
    assert view.suppressed_at == T0 + 1


# A narrow window, and arrival orders that keep every event inside it by construction.
NARROW = replace(POLICY, reorder_window_events=4, reorder_window_hours=24)
MOST_DISPLACED = NARROW.reorder_window_events - 1  # positions an item may move from its place

# Items hours apart, now and then a month (the 30-day reset), so that a narrow window both
# holds several of them and lets others fall out of it.
close_items = st.lists(
    st.tuples(
        st.integers(0, len(KINDS) + 1),  # the last two: a suppression, a lift
        st.one_of(  # the gap since the item before: mostly hours, a month one time in four
            st.integers(0, 4 * HOUR),
            st.integers(0, 4 * HOUR),
            st.integers(0, 30 * HOUR),
            st.integers(29 * DAY, 32 * DAY),
        ),
        st.booleans(),
        st.integers(0, MOST_DISPLACED + 1),  # how far back in the arrival order it may move
    ),
    min_size=5,  # more than the window holds
    max_size=30,
)


def sort_key(item: Item) -> tuple[int, int, str]:
    entry = command_entry(item) if isinstance(item, OperatorCommand) else event_entry(item, POLICY)
    return entry_order(entry)


def within_the_window(
    in_time_order: list[Item], delays: list[int], policy: Any = NARROW
) -> list[Item]:
    """An arrival order in which each item is at most `reorder_window_events - 1` positions
    from its place in event-time order, and any two items that arrive in the reverse of their
    event-time order are less than `reorder_window_hours` of event time apart.

    Item i arrives in the order of i + r_i (ties by i). Two items i < j swap only when
    j - i < r_i - r_j <= r_i, so r_i is capped to reach only the items after i that are less
    than the window's span later: r_i - 1 <= (how many of the next MOST_DISPLACED are)."""
    times = [at_of(item) for item in in_time_order]
    keys = []
    for i, delay in enumerate(delays):
        close = 0
        while (
            close < MOST_DISPLACED
            and i + close + 1 < len(times)
            and times[i + close + 1] - times[i] < policy.reorder_window_ms
        ):
            close += 1
        keys.append((i + min(delay, close + 1), i))
    arrival = [in_time_order[i] for _, i in sorted(keys)]
    position = {id(item): index for index, item in enumerate(arrival)}
    for i, item in enumerate(in_time_order):  # what the construction promises, checked
        assert abs(position[id(item)] - i) <= MOST_DISPLACED
        for later in in_time_order[i + 1 :]:
            if position[id(later)] < position[id(item)]:
                assert at_of(later) - at_of(item) < policy.reorder_window_ms
    return arrival


# Soft bounces an hour apart, the delivery between the 2nd and 3rd arriving 3 places late (after
# the 5th, once the limit suppressed), then two opens a month later.
SOFT_BOUNCES_AROUND_A_DELIVERY_THEN_A_MONTH = [
    (4, 0, False, 0),
    (4, HOUR, False, 0),
    (0, HOUR, False, MOST_DISPLACED + 1),
    (4, HOUR, False, 0),
    (4, HOUR, False, 0),
    (4, HOUR, False, 0),
    (1, 31 * DAY, False, 0),
    (1, HOUR, False, 0),
]


def every_field(state: Any) -> dict[str, Any]:
    """The published record, and the idempotency memory as a set (its order is arrival's)."""
    return state.to_record() | {"recent_event_ids": sorted(state.recent_event_ids)}


@settings(max_examples=300, deadline=None)
@given(drawn=close_items)
@example(drawn=SOFT_BOUNCES_AROUND_A_DELIVERY_THEN_A_MONTH)
def test_a_narrow_window_converges_when_every_event_arrives_inside_it(
    drawn: list[tuple[int, int, bool, int]],
) -> None:
    at = 0
    absolute = []
    for kind, gap, flag, _ in drawn:
        at += gap
        absolute.append((kind, at, flag))
    made = sorted(stream(absolute), key=sort_key)
    arrival = within_the_window(made, [delay for *_, delay in drawn])
    refused: list[Item] = []
    arrived = arrive(arrival, NARROW, refused)
    assert arrived is not None
    # As in the wide test: a command refused where it falls when it arrives is never kept.
    expected = fold(
        ANN,
        [
            command_entry(item) if isinstance(item, OperatorCommand) else event_entry(item, NARROW)
            for item in made
            if item not in refused
        ],
        NARROW,
    )
    assert every_field(arrived.state) == every_field(expected)
    assert arrived.state.late_events == 0
    assert len(arrived.log) <= NARROW.reorder_window_events


def opens_and_a_hard_bounce() -> list[Item]:
    """Hours apart, well inside the default window: opens, a hard bounce, a click, a delivery."""
    return [
        event(1, 1, T0),
        event(2, 1, T0 + HOUR),
        event(3, 6, T0 + 2 * HOUR),
        event(4, 2, T0 + 3 * HOUR, "https://example.com/offer"),
        event(5, 1, T0 + 4 * HOUR),
        event(6, 0, T0 + 5 * HOUR),
    ]


@pytest.mark.parametrize("action", [CommandAction.LIFT, CommandAction.RESET_INACTIVE])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])  # 4: the bounce undoes the lift
def test_a_command_a_month_later_read_first_leaves_the_events_inside_the_window(
    action: CommandAction, seed: int
) -> None:
    """`mailstream replay` reads email.commands before the events: a lift (or an inactivity
    reset) a month after the events arrives first, then the events, shuffled but all inside
    the default window. None of them is late: the state is the fold, the lift after the hard
    bounce (the reset after the last signal) included."""
    events = opens_and_a_hard_bounce()
    operator = command(9, action, T0 + 31 * DAY, force=False)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    arrived = arrive([operator, *shuffled])
    assert arrived is not None
    expected = event_time_fold([*events, operator])
    if action is CommandAction.LIFT:
        assert expected.status is RecipientStatus.ACTIVE and expected.hard_bounces == 1
    else:
        assert expected.score == 0 and expected.opens == 3
    assert every_field(arrived.state) == every_field(expected)
    assert arrived.state.late_events == 0
