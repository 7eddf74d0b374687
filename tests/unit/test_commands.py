from __future__ import annotations

from dataclasses import replace

import pytest

from mailstream.commands import (
    CommandAction,
    CommandError,
    OperatorCommand,
    apply_command,
    normalize_address,
    parse_reason,
)
from mailstream.events import new_event
from mailstream.policy import default_policy
from mailstream.recipient import RecipientState, SuppressionReason, apply

POLICY = default_policy()
DAY = 86_400_000
T0 = 1_700_000_000_000


def command(action: CommandAction, **fields: object) -> OperatorCommand:
    values: dict = {
        "recipient": "ann@example.com",
        "actor": "ops@host",
        "requested_at": T0,
        "command_id": f"cmd-{action}-{fields.get('force', False)}",
    }
    values.update(fields)
    return OperatorCommand(action=action, **values)


def complained() -> RecipientState:
    event = new_event(
        event_id="e1",
        provider="inboxroad",
        event_type="COMPLAINED",
        occurred_at=T0 - DAY,
        recipient="ann@example.com",
    )
    return apply(None, event, POLICY)


def test_suppress_creates_the_state_and_records_reason_and_note() -> None:
    state = apply_command(
        None,
        command(CommandAction.SUPPRESS, reason=SuppressionReason.MANUAL, note="asked by phone"),
        POLICY,
    )
    assert state.status == "SUPPRESSED"
    assert state.suppression_reason == "MANUAL"
    assert state.suppressed_at == T0
    assert state.suppression_note == "asked by phone"


def test_the_same_command_twice_changes_nothing() -> None:
    first = apply_command(
        None, command(CommandAction.SUPPRESS, reason=SuppressionReason.MANUAL), POLICY
    )
    lifted = apply_command(first, command(CommandAction.LIFT), POLICY)
    assert lifted.status == "ACTIVE"
    again = apply_command(
        lifted, command(CommandAction.SUPPRESS, reason=SuppressionReason.MANUAL), POLICY
    )
    assert again is lifted, "a redelivered SUPPRESS must not suppress again"


def test_lifting_a_complaint_needs_force() -> None:
    state = complained()
    lift = command(CommandAction.LIFT, tenant="default")
    with pytest.raises(CommandError, match="force"):
        apply_command(state, lift, POLICY)
    lifted = apply_command(state, replace(lift, force=True), POLICY)
    assert not lifted.suppressed_for(None)
    assert lifted.tenants["default"].suppression_reason is None


def test_lifting_an_active_recipient_is_a_no_op() -> None:
    state = apply(
        None,
        new_event(
            event_id="d",
            provider="maileroo",
            event_type="DELIVERED",
            occurred_at=T0,
            recipient="ann@example.com",
        ),
        POLICY,
    )
    assert apply_command(state, command(CommandAction.LIFT), POLICY) is state


def test_reset_inactive_resets_only_after_the_window() -> None:
    opened = apply(
        None,
        new_event(
            event_id="o",
            provider="maileroo",
            event_type="OPENED",
            occurred_at=T0,
            recipient="ann@example.com",
            user_agent="Mozilla/5.0 (Windows NT 10.0) Chrome/122",
        ),
        POLICY,
    )
    assert opened.score == 5
    not_yet = command(
        CommandAction.RESET_INACTIVE, requested_at=T0 + 30 * DAY, command_id="sweep-1"
    )
    assert apply_command(opened, not_yet, POLICY) is opened
    due = command(
        CommandAction.RESET_INACTIVE, requested_at=T0 + 30 * DAY + 1, command_id="sweep-2"
    )
    reset = apply_command(opened, due, POLICY)
    assert reset.score == 0
    assert reset.opens == 1, "lifetime totals stay"


@pytest.mark.parametrize(
    "text", ["ann", "ann@", "@example.com", "ann example@x.com", "ann@example", "a@b@c.com"]
)
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(CommandError, match="not an email address"):
        normalize_address(text)


def test_addresses_are_trimmed_and_lower_cased() -> None:
    assert normalize_address("  Ann@Example.COM ") == "ann@example.com"


def test_reasons_parse_case_insensitively_and_unknown_ones_are_named() -> None:
    assert parse_reason("manual") is SuppressionReason.MANUAL
    assert parse_reason("hard-bounce") is SuppressionReason.HARD_BOUNCE
    with pytest.raises(CommandError, match=r"unknown reason 'vacation'.*manual"):
        parse_reason("vacation")
    with pytest.raises(CommandError, match="unknown reason"):
        parse_reason("unknown")
