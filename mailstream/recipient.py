"""Per-recipient state and the rules that update it, as pure functions.

`apply(state, event, policy)` is the one place the scoring and suppression rules live; the
recipients agent and `mailstream simulate` both call it. It returns the SAME object when the
event changes nothing (a duplicate event id), so callers can skip publishing.

The rules (parameters in `policy.yaml`):
- Engagement counts human opens and clicks only. An open or click is a machine event when the
  provider flags it, its user agent is listed, or it comes less than `machine_window_seconds`
  after its message's delivery (or before it): counted in machine_opens / machine_clicks only.
- Score: the 1st human open since the last reset scores `first_open`, the 3rd adds
  `third_open_bonus`, other opens nothing; each human click `click`, each reply `reply`, each
  delivery `delivered`. An event more than `inactivity_reset_days` after `last_signal_at`
  first resets the score AND the open count toward those bonuses (`opens_since_reset`): the
  next open is a first open again. The lifetime `opens` total is kept.
- A human click on an unsubscribe URL and an UNSUBSCRIBED event suppress (UNSUBSCRIBE) and
  score nothing. A machine click on such a URL does not: scanners follow every link.
- BOUNCED: HARD suppresses (HARD_BOUNCE); SOFT counts toward `soft_bounce_limit`, reaching it
  suppresses (SOFT_BOUNCE_LIMIT), a delivery resets the count; EXPIRED, BLOCK and
  UNDETERMINED (or a missing class) are counted and never suppress. COMPLAINED suppresses
  (COMPLAINT). REJECTED (the provider refused to send, e.g. Maileroo's own suppression list)
  is counted and never suppresses: it names no cause we could act on. QUEUED, SENT, DEFERRED
  and UNKNOWN count nothing but still create the recipient's state.
- Suppression is sticky: later events update counters and score, never the status. The first
  cause stays, except that a complaint replaces any other cause, so that lifting it needs
  `force`. Only `lift_suppression` (an operator) makes a recipient ACTIVE again.
- Tenants (sending teams): the rules run twice per event. The recipient's own fields are the
  fold of every tenant's events under the top-level policy, and a suppression there holds for
  everyone: only reasons whose scope is GLOBAL (`suppression_scopes`, as the event's tenant's
  policy says) suppress at this level. `tenants[T]` is the same fold over tenant T's events
  alone, under T's policy (`Policy.for_tenant`): its TENANT-scoped reasons suppress it for T;
  a GLOBAL-scoped reason T's own rules find (its unsubscribe links, say) suppresses for
  everyone. The soft-bounce run is the address's, over everyone's events: a tenant with a
  lower soft_bounce_limit is suppressed alone once the run reaches its limit.
  An event without a tenant belongs to `default_tenant`.
- Idempotent: the last `dedupe_window` event ids are remembered; a repeat changes nothing.
- Out of order: last_* and updated_at take the maximum; an event older than last_signal_at
  never resets the score.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mailstream.errors import ErrorKind, MailstreamError
from mailstream.events import BounceClass, EventType
from mailstream.policy import Policy, Scope, ScoreWeights


class RecipientStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"  # may be mailed
    SUPPRESSED = "SUPPRESSED"  # must not be mailed (see suppression_reason)


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "HARD_BOUNCE"  # a hard bounce: the address does not exist
    SOFT_BOUNCE_LIMIT = "SOFT_BOUNCE_LIMIT"  # soft_bounce_limit soft bounces without a delivery
    COMPLAINT = "COMPLAINT"  # the recipient reported mail as spam; lifting needs force
    UNSUBSCRIBE = "UNSUBSCRIBE"  # an unsubscribe event or a human unsubscribe-link click
    MANUAL = "MANUAL"  # an operator suppressed the recipient
    UNKNOWN = "UNKNOWN"  # read from a record whose reason this version does not know


class SuppressionError(MailstreamError, ValueError):
    """An operator change the rules refuse (lifting a complaint without force)."""

    default_kind = ErrorKind.COMMAND_REFUSED


TIMESTAMP_FIELDS: tuple[str, ...] = (
    "suppressed_at",
    "last_open_at",
    "last_click_at",
    "last_signal_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class RecipientState:
    """Everything known about one recipient; timestamps are epoch milliseconds (event time).

    `soft_bounces` is the current count toward the soft-bounce limit (a delivery resets it);
    the other counters are lifetime totals. `tenants` holds each tenant's view (the same
    fields, over that tenant's events, under its policy; their own `tenants` and
    `recent_event_ids` stay empty). The suppression fields here are the GLOBAL suppression.
    `recent_event_ids` is internal: the idempotency memory, kept in the state table but not
    part of the published record.
    """

    recipient: str
    score: int = 0
    opens_since_reset: int = 0  # human opens counted toward the 1st/3rd-open points
    status: RecipientStatus = RecipientStatus.ACTIVE
    suppression_reason: SuppressionReason | None = None
    suppressed_at: int | None = None
    suppression_event_id: str | None = None  # the event that caused it; None: an operator
    suppression_note: str | None = None  # the operator's note
    opens: int = 0
    clicks: int = 0
    replies: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0
    delivered: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    expired: int = 0
    blocked: int = 0
    undetermined_bounces: int = 0
    rejected: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    last_open_at: int | None = None
    last_click_at: int | None = None
    last_signal_at: int | None = None  # the last human open, click or reply
    updated_at: int | None = None  # the newest event (or operator change) applied
    late_events: int = 0  # events that came after the reorder window: applied out of order
    tenants: Mapping[str, RecipientState] = field(default_factory=dict)
    recent_event_ids: tuple[str, ...] = ()

    @property
    def suppressed(self) -> bool:
        return self.status is RecipientStatus.SUPPRESSED

    def suppressed_for(self, tenant: str | None) -> bool:
        """Whether `tenant` must not mail the recipient (globally, or for that tenant); with
        None, whether any tenant must not (the meaning of the published `status`)."""
        if self.suppressed:
            return True
        if tenant is None:
            return any(view.suppressed for view in self.tenants.values())
        view = self.tenants.get(tenant)
        return view is not None and view.suppressed

    def to_record(self) -> dict[str, Any]:
        """The published record (schemas/recipient_state.avsc): enums as symbols, no internals.

        Its top-level status and suppression fields keep their meaning for readers that know
        no tenants: SUPPRESSED while any scope suppresses, with the global cause if there is
        one, else the earliest tenant's (`scope` and `tenant` say which)."""
        record = self._own_record()
        shown = shown_suppression(self)
        if shown is not None:
            view, scope, tenant = shown
            for name in _SUPPRESSION_FIELDS:
                record[name] = getattr(view, name)
            record["scope"] = scope.value
            record["tenant"] = tenant
        else:
            record["scope"] = None
            record["tenant"] = None
        record["status"] = record["status"].value
        if record["suppression_reason"] is not None:
            record["suppression_reason"] = record["suppression_reason"].value
        record["tenants"] = [
            _tenant_record(name, self.tenants[name]) for name in sorted(self.tenants)
        ]
        return record

    def to_table_record(self) -> dict[str, Any]:
        """What the state table stores (JSON-able): the fields as they are (the suppression
        fields are the global one's), each tenant's view, the idempotency memory."""
        record = self._own_record()
        record["status"] = self.status.value
        if self.suppression_reason is not None:
            record["suppression_reason"] = self.suppression_reason.value
        record["tenants"] = {name: view.to_table_record() for name, view in self.tenants.items()}
        record["recent_event_ids"] = list(self.recent_event_ids)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RecipientState:
        """Reads `to_record()` or `to_table_record()` output (timestamps as epoch-ms ints, as
        `mailstream.codec` decodes them); fields the record lacks take their defaults."""
        values = {name: record[name] for name in _FIELD_NAMES if name in record}
        if record.get("scope") == Scope.TENANT:  # the published top level shows a tenant's
            for name in _SUPPRESSION_FIELDS:
                values.pop(name, None)
        values["status"] = RecipientStatus(values.get("status", RecipientStatus.ACTIVE))
        if values.get("suppression_reason") is not None:
            values["suppression_reason"] = SuppressionReason(values["suppression_reason"])
        values["recent_event_ids"] = tuple(values.get("recent_event_ids", ()))
        views = values.get("tenants") or {}
        if not isinstance(views, Mapping):  # the published list of TenantState records
            views = {view["tenant"]: view for view in views}
        recipient = values["recipient"]
        values["tenants"] = {
            name: cls.from_record({**view, "recipient": recipient}) for name, view in views.items()
        }
        return cls(**values)

    def _own_record(self) -> dict[str, Any]:
        return dict(zip(_PUBLISHED_FIELDS, _get_published(self), strict=True))


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RecipientState))
_INTERNAL_FIELDS = ("recent_event_ids", "tenants")
_PUBLISHED_FIELDS: tuple[str, ...] = tuple(n for n in _FIELD_NAMES if n not in _INTERNAL_FIELDS)
_SUPPRESSION_FIELDS = (
    "status",
    "suppression_reason",
    "suppressed_at",
    "suppression_event_id",
    "suppression_note",
)
# A TenantState record (schemas/recipient_state.avsc): what a tenant's view publishes.
_TENANT_FIELDS: tuple[str, ...] = (
    "score",
    "status",
    "suppression_reason",
    "suppressed_at",
    "suppression_event_id",
    "suppression_note",
    "opens",
    "clicks",
    "replies",
    "delivered",
    "soft_bounces",
    "hard_bounces",
    "complaints",
    "unsubscribes",
    "last_signal_at",
)
_get_tenant_fields = operator.attrgetter(*_TENANT_FIELDS)
_FIELD_INDEX: dict[str, int] = {name: index for index, name in enumerate(_FIELD_NAMES)}
_get_all = operator.attrgetter(*_FIELD_NAMES)
_get_published = operator.attrgetter(*_PUBLISHED_FIELDS)

_Event = Mapping[str, Any]
_Changes = dict[str, Any]


def apply(state: RecipientState | None, event: Mapping[str, Any], policy: Policy) -> RecipientState:
    """The state after `event`; `state` itself when the event changes nothing (a duplicate).

    `event` is a canonical event dict whose recipient is known (resolve it first, see
    `mailstream.messages.route`); `state` is None for a recipient seen for the first time.
    """
    recipient = event["recipient"]
    if not recipient:
        raise ValueError(f"event {event['event_id']} has no recipient: resolve it first")
    if state is None:
        state = RecipientState(recipient=recipient)
    elif state.recipient != recipient:
        raise ValueError(f"event for {recipient!r} applied to the state of {state.recipient!r}")
    event_id = event["event_id"]
    if event_id in state.recent_event_ids:
        return state
    tenant = tenant_of(event, policy, state)
    own = policy.for_tenant(tenant)
    overall, _ = _updated(state, event, policy, lambda reason: own.scope_of(reason) is Scope.GLOBAL)
    view, proposed = _updated(
        state.tenants.get(tenant) or RecipientState(recipient=recipient),
        _as_seen_by(event, own, policy),
        own,
        lambda reason: own.scope_of(reason) is Scope.TENANT,
    )
    if (
        own is not policy
        and proposed is not None
        and proposed != SuppressionReason.SOFT_BOUNCE_LIMIT
        and own.scope_of(proposed) is Scope.GLOBAL
    ):  # the tenant's own rules (its unsubscribe links, say) found a cause for everyone
        overall = _evolve(overall, _suppression(overall, SuppressionReason(proposed), event))
    views = {**state.tenants, tenant: view}
    if event.get("bounce_class") == BounceClass.SOFT:
        _apply_stricter_soft_bounce_limits(overall, views, event, policy)
    return _evolve(
        overall,
        {
            "recent_event_ids": _remember(state.recent_event_ids, event_id, policy.dedupe_window),
            "tenants": views,
        },
    )


def tenant_of(event: Mapping[str, Any], policy: Policy, state: RecipientState | None = None) -> str:
    """The tenant an event counts for: its own, else `default_tenant`. A recipient holds at
    most `max_tenants_per_recipient` views: the events of further tenants count for the
    default tenant (hostile or mistaken tenant ids must not grow a state without bound)."""
    tenant = event.get("tenant") or policy.default_tenant
    if (
        state is not None
        and tenant not in state.tenants
        and len(state.tenants) >= policy.max_tenants_per_recipient
    ):
        return policy.default_tenant
    return str(tenant)


def _updated(
    state: RecipientState, event: _Event, policy: Policy, holds: Callable[[str], bool]
) -> tuple[RecipientState, str | None]:
    """`state` after the rules' `event` under `policy`, a suppression only for the reasons
    that `holds` at this level; and the reason the rules proposed (held or not)."""
    occurred_at = event["occurred_at"]
    if _inactive_too_long(state, occurred_at, policy):
        state = _evolve(state, {"score": 0, "opens_since_reset": 0})
    changes = _RULES.get(event["event_type"], _counts_nothing)(state, event, policy)
    reason = changes.get("suppression_reason")
    if reason is not None and not holds(reason):
        for name in _SUPPRESSION_FIELDS:
            del changes[name]
    if state.updated_at is None or occurred_at > state.updated_at:
        changes["updated_at"] = occurred_at
    return _evolve(state, changes), reason


def _apply_stricter_soft_bounce_limits(
    overall: RecipientState, views: dict[str, RecipientState], event: _Event, policy: Policy
) -> None:
    """A GLOBAL-scoped reason is judged on everyone's events: the address's soft-bounce run
    counts whoever's mail bounced. Each tenant whose policy has a lower limit than the top
    level's stops mailing the address, alone, once the run reaches its own limit (whoever's
    soft bounce brought it there). Updates `views` in place."""
    if overall.suppressed:
        return
    for name, own in policy.tenants:
        if (
            own.soft_bounce_limit < policy.soft_bounce_limit
            and own.scope_of(SuppressionReason.SOFT_BOUNCE_LIMIT) is Scope.GLOBAL
            and overall.soft_bounces >= own.soft_bounce_limit
        ):
            view = views.get(name) or RecipientState(recipient=overall.recipient)
            if not view.suppressed:
                views[name] = _evolve(
                    view, _suppression(view, SuppressionReason.SOFT_BOUNCE_LIMIT, event)
                )


def _as_seen_by(event: _Event, own: Policy, policy: Policy) -> _Event:
    """The event as the tenant's policy judges it: a log entry carries the tenant's machine
    verdict (`tenant_machine`) where it differs from the top level's."""
    if own is policy or "tenant_machine" not in event:
        return event
    return {**event, "provider_flagged_machine": event["tenant_machine"]}


def reset_if_inactive(state: RecipientState, now: int, policy: Policy) -> RecipientState:
    """The inactivity reset by wall clock (the worker's periodic sweep): score and the open
    count toward the bonuses go to 0 when `now` is more than `inactivity_reset_days` after the
    last human signal, here and in each tenant's view under its policy; the same object when
    no reset is due."""
    views = {
        name: _reset(view, now, policy.for_tenant(name)) for name, view in state.tenants.items()
    }
    reset = _reset(state, now, policy)
    if reset is state and all(views[name] is state.tenants[name] for name in views):
        return state
    return _evolve(reset, {"tenants": views, "updated_at": _latest(state.updated_at, now)})


def _reset(state: RecipientState, now: int, policy: Policy) -> RecipientState:
    if not _inactive_too_long(state, now, policy):
        return state
    return _evolve(
        state, {"score": 0, "opens_since_reset": 0, "updated_at": _latest(state.updated_at, now)}
    )


def tenant_view(state: RecipientState, tenant: str) -> RecipientState:
    """Tenant `tenant`'s view of the recipient (a fresh one when it has none yet)."""
    return state.tenants.get(tenant) or RecipientState(recipient=state.recipient)


def with_tenant_view(state: RecipientState, tenant: str, view: RecipientState) -> RecipientState:
    """`state` holding `view` as tenant `tenant`'s; the same object when the view is too."""
    if state.tenants.get(tenant) is view:
        return state
    changes: _Changes = {"tenants": {**state.tenants, tenant: view}}
    if view.updated_at is not None:
        changes["updated_at"] = _latest(state.updated_at, view.updated_at)
    return _evolve(state, changes)


def shown_suppression(state: RecipientState) -> tuple[RecipientState, Scope, str | None] | None:
    """The suppression a reader that knows no tenants is shown: the global one, else the
    earliest tenant's; None when no scope suppresses the recipient."""
    if state.suppressed:
        return state, Scope.GLOBAL, None
    suppressed = [
        (view.suppressed_at or 0, name, view)
        for name, view in state.tenants.items()
        if view.suppressed
    ]
    if not suppressed:
        return None
    _, name, view = min(suppressed, key=lambda item: (item[0], item[1]))
    return view, Scope.TENANT, name


def remember(state: RecipientState, event_id: str, policy: Policy) -> RecipientState:
    """The state with `event_id` added to its idempotency memory (operator commands)."""
    recent = _remember(state.recent_event_ids, event_id, policy.dedupe_window)
    return _evolve(state, {"recent_event_ids": recent})


def mark_late(state: RecipientState) -> RecipientState:
    """The state counting one more event applied out of event-time order (mailstream.timeline)."""
    return _evolve(state, {"late_events": state.late_events + 1})


def is_machine(event: Mapping[str, Any], policy: Policy) -> bool:
    """Whether an open or click was made by software rather than by the recipient."""
    if event.get("provider_flagged_machine"):
        return True
    user_agent = event.get("user_agent")
    if user_agent and policy.is_machine_user_agent(user_agent):
        return True
    delivered_at = event.get("delivered_at")
    return (
        delivered_at is not None and event["occurred_at"] - delivered_at < policy.machine_window_ms
    )


def suppress_manually(
    state: RecipientState,
    reason: SuppressionReason,
    at: int,
    note: str | None = None,
    *,
    force: bool = False,
) -> RecipientState:
    """An operator suppresses the recipient (usually with reason MANUAL); replaces the current
    cause, except that replacing COMPLAINT by another reason needs `force`."""
    current = state.suppression_reason
    if current is SuppressionReason.COMPLAINT and reason != current:
        _require_force(state, force)
    return _evolve(
        state,
        {
            "status": RecipientStatus.SUPPRESSED,
            "suppression_reason": SuppressionReason(reason),
            "suppressed_at": at,
            "suppression_event_id": None,
            "suppression_note": note,
            "updated_at": _latest(state.updated_at, at),
        },
    )


def lift_suppression(state: RecipientState, at: int, *, force: bool = False) -> RecipientState:
    """An operator makes the recipient ACTIVE again; the same object if it was not suppressed.

    Lifting a COMPLAINT needs `force`. The soft-bounce count restarts at 0 (lifting means
    trying again); lifetime counters and the score are kept.
    """
    if not state.suppressed:
        return state
    if state.suppression_reason is SuppressionReason.COMPLAINT:
        _require_force(state, force)
    return _evolve(
        state,
        {
            "status": RecipientStatus.ACTIVE,
            "suppression_reason": None,
            "suppressed_at": None,
            "suppression_event_id": None,
            "suppression_note": None,
            "soft_bounces": 0,
            "updated_at": _latest(state.updated_at, at),
        },
    )


def suppression_record(state: RecipientState, actor: str | None = None) -> dict[str, Any] | None:
    """The Suppression record (schemas/suppression.avsc) of `email.suppressions`, for readers
    that know no tenants: the suppression `shown_suppression` picks; None when none holds."""
    shown = shown_suppression(state)
    if shown is None:
        return None
    view, scope, tenant = shown
    return _suppression_of(state.recipient, view, scope, tenant, actor)


def scoped_suppressions(
    state: RecipientState, actor: str | None = None
) -> dict[str | None, dict[str, Any]]:
    """Every suppression that holds, by tenant (None: the global one), as Suppression records
    of `email.suppressions.scoped`."""
    records: dict[str | None, dict[str, Any]] = {}
    if state.suppressed:
        records[None] = _suppression_of(state.recipient, state, Scope.GLOBAL, None, actor)
    for name, view in state.tenants.items():
        if view.suppressed:
            records[name] = _suppression_of(state.recipient, view, Scope.TENANT, name, actor)
    return records


def _suppression_of(
    recipient: str, view: RecipientState, scope: Scope, tenant: str | None, actor: str | None
) -> dict[str, Any]:
    reason = view.suppression_reason or SuppressionReason.UNKNOWN
    return {
        "recipient": recipient,
        "reason": reason.value,
        "since": view.suppressed_at or 0,
        "event_id": view.suppression_event_id,
        "source": "event" if view.suppression_event_id is not None else "operator",
        "actor": actor,
        "note": view.suppression_note,
        "scope": scope.value,
        "tenant": tenant,
    }


def _tenant_record(name: str, view: RecipientState) -> dict[str, Any]:
    record = dict(zip(_TENANT_FIELDS, _get_tenant_fields(view), strict=True))
    record["tenant"] = name
    record["status"] = view.status.value
    if view.suppression_reason is not None:
        record["suppression_reason"] = view.suppression_reason.value
    return record


def _require_force(state: RecipientState, force: bool) -> None:
    if not force:
        raise SuppressionError(
            f"{state.recipient} is suppressed for a COMPLAINT: changing that needs force"
        )


def _evolve(state: RecipientState, changes: _Changes) -> RecipientState:
    """`dataclasses.replace` at half the cost (measured 3.7 µs against 7.5 µs here)."""
    values = list(_get_all(state))
    for name, value in changes.items():
        values[_FIELD_INDEX[name]] = value
    return RecipientState(*values)


def _remember(recent: tuple[str, ...], event_id: str, window: int) -> tuple[str, ...]:
    keep = window - 1
    if len(recent) > keep:
        recent = recent[len(recent) - keep :]
    return (*recent, event_id)


def _inactive_too_long(state: RecipientState, occurred_at: int, policy: Policy) -> bool:
    last_signal_at = state.last_signal_at
    return (
        last_signal_at is not None
        and occurred_at - last_signal_at > policy.inactivity_reset_ms
        and (state.score != 0 or state.opens_since_reset != 0)
    )


def _latest(current: int | None, candidate: int) -> int:
    return candidate if current is None or candidate > current else current


def _suppression(state: RecipientState, reason: SuppressionReason, event: _Event) -> _Changes:
    """The fields that suppress the recipient for `reason`, unless a suppression stays."""
    if state.suppressed and (
        reason is not SuppressionReason.COMPLAINT
        or state.suppression_reason is SuppressionReason.COMPLAINT
    ):
        return {}
    return {
        "status": RecipientStatus.SUPPRESSED,
        "suppression_reason": reason,
        "suppressed_at": event["occurred_at"],
        "suppression_event_id": event["event_id"],
        "suppression_note": None,
    }


def _counts_nothing(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    return {}


def _delivered(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    changes: _Changes = {"delivered": state.delivered + 1}
    if policy.delivery_resets_soft_bounces:
        changes["soft_bounces"] = 0
    if policy.score.delivered:
        changes["score"] = state.score + policy.score.delivered
    return changes


def _opened(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    if is_machine(event, policy):
        return {"machine_opens": state.machine_opens + 1}
    opens_since_reset = state.opens_since_reset + 1
    at = event["occurred_at"]
    return {
        "opens": state.opens + 1,
        "opens_since_reset": opens_since_reset,
        "score": state.score + _open_points(opens_since_reset, policy.score),
        "last_open_at": _latest(state.last_open_at, at),
        "last_signal_at": _latest(state.last_signal_at, at),
    }


def _open_points(opens_since_reset: int, weights: ScoreWeights) -> int:
    if opens_since_reset == 1:
        return weights.first_open
    if opens_since_reset == 3:
        return weights.third_open_bonus
    return 0


def _clicked(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    if is_machine(event, policy):
        return {"machine_clicks": state.machine_clicks + 1}
    url = event.get("url")
    if url and policy.is_unsubscribe_url(url):
        return _unsubscribed(state, event, policy)
    at = event["occurred_at"]
    return {
        "clicks": state.clicks + 1,
        "score": state.score + policy.score.click,
        "last_click_at": _latest(state.last_click_at, at),
        "last_signal_at": _latest(state.last_signal_at, at),
    }


def _replied(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    return {
        "replies": state.replies + 1,
        "score": state.score + policy.score.reply,
        "last_signal_at": _latest(state.last_signal_at, event["occurred_at"]),
    }


def _unsubscribed(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    return {
        "unsubscribes": state.unsubscribes + 1,
        **_suppression(state, SuppressionReason.UNSUBSCRIBE, event),
    }


def _complained(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    return {
        "complaints": state.complaints + 1,
        **_suppression(state, SuppressionReason.COMPLAINT, event),
    }


def _rejected(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    return {"rejected": state.rejected + 1}


def _bounced(state: RecipientState, event: _Event, policy: Policy) -> _Changes:
    bounce_class = event.get("bounce_class")
    if bounce_class == BounceClass.HARD:
        return {
            "hard_bounces": state.hard_bounces + 1,
            **_suppression(state, SuppressionReason.HARD_BOUNCE, event),
        }
    if bounce_class == BounceClass.SOFT:
        soft_bounces = state.soft_bounces + 1
        changes: _Changes = {"soft_bounces": soft_bounces}
        if soft_bounces >= policy.soft_bounce_limit:
            changes.update(_suppression(state, SuppressionReason.SOFT_BOUNCE_LIMIT, event))
        return changes
    if bounce_class == BounceClass.EXPIRED:
        return {"expired": state.expired + 1}
    if bounce_class == BounceClass.BLOCK:
        return {"blocked": state.blocked + 1}
    return {"undetermined_bounces": state.undetermined_bounces + 1}


_Rule = Callable[[RecipientState, _Event, Policy], _Changes]
_RULES: dict[str, _Rule] = {
    EventType.DELIVERED.value: _delivered,
    EventType.OPENED.value: _opened,
    EventType.CLICKED.value: _clicked,
    EventType.REPLIED.value: _replied,
    EventType.UNSUBSCRIBED.value: _unsubscribed,
    EventType.COMPLAINED.value: _complained,
    EventType.BOUNCED.value: _bounced,
    EventType.REJECTED.value: _rejected,
}
