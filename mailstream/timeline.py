"""A recipient's state as the fold of its events in event-time order, whatever the arrival order.

The state is defined as the rules (`mailstream.recipient.apply`) folded over the recipient's
events sorted by (occurred_at, received_at, event_id), operator commands taking their place by
their requested_at. A `Timeline` keeps that true incrementally, within a bounded reorder window:

- `log`: the recent entries, sorted; each holds the few fields the rules read (the machine
  verdict is taken when the event is first seen, so a log entry needs no user agent).
- `base`: the state folded over everything before the log.
- `state`: `base` folded over `log`, the state published.

An entry later than the last one (the common case live) is applied to `state` and appended. An
earlier one inside the window is inserted and `state` is folded again from `base`. One earlier
than the whole log is *late*: it is applied as it comes (to `state` and `base`) and counted in
`late_events`. The log keeps at most `reorder_window_events` entries, reaching back at most
`reorder_window_hours` of event time from its newest event (commands do not count as the
newest); older entries are folded into `base`.

Idempotency: a repeat of an id in the log or in the state's `recent_event_ids`
(`dedupe_window`) changes nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailstream.commands import CommandError, OperatorCommand, apply_command
from mailstream.events import EventType
from mailstream.policy import Policy
from mailstream.recipient import RecipientState, apply, is_machine, mark_late, remember

Entry = dict[str, Any]
_EVENT_FIELDS = ("event_id", "event_type", "occurred_at", "received_at", "bounce_class", "tenant")


@dataclass(frozen=True, slots=True)
class Timeline:
    """`base_record` is the base's table record, read only when the log is folded again (an
    insert, a late event, a trim): the common append touches neither it nor its JSON."""

    state: RecipientState
    base_record: Mapping[str, Any] | None = None
    log: tuple[Entry, ...] = ()

    @property
    def base(self) -> RecipientState | None:
        record = self.base_record
        return RecipientState.from_record(record) if record is not None else None

    def to_table_record(self) -> dict[str, Any]:
        """What the state table stores (JSON-able)."""
        return {"state": self.state.to_table_record(), "base": self.base_record, "log": self.log}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Timeline:
        """Reads `to_table_record()`, or a bare state record (tables written before timelines:
        their state becomes the base of an empty log)."""
        if "state" not in record:
            return cls(RecipientState.from_record(record), record, ())
        return cls(
            RecipientState.from_record(record["state"]),
            record.get("base"),
            tuple(record.get("log") or ()),
        )


def state_of(record: Mapping[str, Any]) -> RecipientState:
    """The current state held in a state-table record."""
    return Timeline.from_record(record).state


def event_entry(event: Mapping[str, Any], policy: Policy) -> Entry:
    """What the rules read of a canonical event, the machine verdict taken now; fields without
    a value are left out (the rules read them with .get)."""
    entry: Entry = {name: event[name] for name in _EVENT_FIELDS if event.get(name) is not None}
    event_type = event["event_type"]
    if event_type == EventType.OPENED or event_type == EventType.CLICKED:
        machine = is_machine(event, policy)
        if machine:
            entry["provider_flagged_machine"] = True
        own = policy.for_tenant(event.get("tenant") or policy.default_tenant)
        if own is not policy and is_machine(event, own) != machine:
            entry["tenant_machine"] = not machine
        if event_type == EventType.CLICKED and event.get("url"):
            entry["url"] = event["url"]
    return entry


def command_entry(command: OperatorCommand) -> Entry:
    return {
        "event_id": command.command_id,
        "occurred_at": command.requested_at,
        "received_at": command.requested_at,
        "command": command.to_record(),
    }


def add_event(timeline: Timeline | None, event: Mapping[str, Any], policy: Policy) -> Timeline:
    """The timeline with `event`; the same object for a duplicate."""
    recipient = event["recipient"]
    entry = event_entry(event, policy)
    if timeline is not None and _appends(timeline, entry):
        if event["event_id"] in timeline.state.recent_event_ids:
            return timeline
        state = apply(timeline.state, event, policy)  # the fast path: in order, live
        return _trimmed(Timeline(state, timeline.base_record, (*timeline.log, entry)), policy)
    return _add(timeline, entry, recipient, policy, refuse=False)


def add_command(timeline: Timeline | None, command: OperatorCommand, policy: Policy) -> Timeline:
    """The timeline with `command`; CommandError when the rules refuse it at its place in
    time (it is then not kept). A command that changes nothing now is kept all the same: an
    earlier event may arrive later and give it something to do (a lift after a bounce)."""
    return _add(timeline, command_entry(command), command.recipient, policy, refuse=True)


def fold(recipient: str, entries: Iterable[Entry], policy: Policy) -> RecipientState:
    """The state of `entries` applied in event-time order (what a timeline converges to)."""
    return _fold_onto(None, sorted(entries, key=order), policy, recipient)


def order(entry: Mapping[str, Any]) -> tuple[int, int, str]:
    return (entry["occurred_at"], entry.get("received_at") or 0, entry["event_id"])


def _appends(timeline: Timeline, entry: Entry) -> bool:
    """Whether `entry` goes at the end of the log: no later entry, nothing folded after it."""
    log = timeline.log
    if log:
        return order(entry) >= order(log[-1])
    return not _before_base(timeline.base_record, entry)


def _add(
    timeline: Timeline | None, entry: Entry, recipient: str, policy: Policy, *, refuse: bool
) -> Timeline:
    if timeline is None:
        state = _step(None, entry, policy, recipient, refuse=refuse)
        return _trimmed(Timeline(state, None, (entry,)), policy)
    if entry["event_id"] in timeline.state.recent_event_ids:
        return timeline
    log = timeline.log
    if _appends(timeline, entry):
        state = _step(timeline.state, entry, policy, recipient, refuse=refuse)
        return _trimmed(Timeline(state, timeline.base_record, (*log, entry)), policy)
    if _before_base(timeline.base_record, entry):
        return _late(timeline, entry, policy, recipient, refuse)
    key = order(entry)
    position = bisect.bisect_right([order(each) for each in log], key)
    base = timeline.base
    if refuse:  # refused where it falls: checked against the state just before it
        before = _fold_onto(base, log[:position], policy, recipient)
        _step(before, entry, policy, recipient, refuse=True)
    inserted = (*log[:position], entry, *log[position:])
    state = _fold_onto(base, inserted, policy, recipient)
    return _trimmed(Timeline(state, timeline.base_record, inserted), policy)


def _fold_onto(
    state: RecipientState | None, entries: Iterable[Entry], policy: Policy, recipient: str
) -> RecipientState:
    for entry in entries:
        state = _step(state, entry, policy, recipient, refuse=False)
    return state or RecipientState(recipient=recipient)


def _late(
    timeline: Timeline, entry: Entry, policy: Policy, recipient: str, refuse: bool
) -> Timeline:
    """An entry earlier than what was folded into the base: applied as it comes, counted."""
    state = mark_late(_step(timeline.state, entry, policy, recipient, refuse=refuse))
    base = mark_late(_step(timeline.base, entry, policy, recipient, refuse=False))
    return Timeline(state, base.to_table_record(), timeline.log)


def _before_base(base_record: Mapping[str, Any] | None, entry: Entry) -> bool:
    """Whether `entry` is earlier than what was folded into the base: too late to insert."""
    if base_record is None:
        return False
    updated_at = base_record.get("updated_at")
    return updated_at is not None and entry["occurred_at"] < updated_at


def _trimmed(timeline: Timeline, policy: Policy) -> Timeline:
    log = timeline.log
    newest = _newest_event_time(log)
    horizon = newest - policy.log_window_ms if newest is not None else None
    start = 0
    while start < len(log) and (
        len(log) - start > policy.log_events
        or (horizon is not None and log[start]["occurred_at"] < horizon)
    ):
        start += 1
    if start == 0:
        return timeline
    base = _fold_onto(timeline.base, log[:start], policy, timeline.state.recipient)
    return Timeline(timeline.state, base.to_table_record(), log[start:])


def _newest_event_time(log: tuple[Entry, ...]) -> int | None:
    """The event time of the log's newest event. Commands do not count: `mailstream replay`
    reads the commands first, and a command weeks after the events must not push them out."""
    for entry in reversed(log):
        if "command" not in entry:
            occurred_at: int = entry["occurred_at"]
            return occurred_at
    return None


def _step(
    state: RecipientState | None, entry: Entry, policy: Policy, recipient: str, *, refuse: bool
) -> RecipientState:
    command = entry.get("command")
    if command is None:
        return apply(state, {**entry, "recipient": recipient}, policy)
    try:
        changed = apply_command(state, OperatorCommand.from_record(command), policy)
    except CommandError:
        if refuse:
            raise
        return state or RecipientState(recipient=recipient)  # refused at this place in time
    if changed is state and state is not None:  # remembered all the same: a repeat is one
        return remember(state, entry["event_id"], policy)
    return changed
