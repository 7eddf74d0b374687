"""Operator commands: manual suppression, lifting it, and the inactivity reset.

Commands travel on the commands topic to the state agent, which applies them with
`apply_command`, so every change goes through the recipients table (one writer) and is
published like any event's. A command's id joins the state's idempotency memory: a command
redelivered after a crash changes nothing the second time.
"""

from __future__ import annotations

import enum
import getpass
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from mailstream.addresses import canonical_address
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.policy import Policy
from mailstream.recipient import (
    RecipientState,
    SuppressionError,
    SuppressionReason,
    lift_suppression,
    remember,
    reset_if_inactive,
    suppress_manually,
    tenant_view,
    with_tenant_view,
)
from mailstream.times import MAX_EPOCH_MS

# Deliberately loose (RFC 5321 allows far more than any regex checks well): one @, a dot in
# the domain, no spaces. It catches typos such as a missing @ or a pasted name.
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_COMMAND_SKEW_MS = 86_400_000
MAX_COMMAND_ID_CHARS = 200


class CommandAction(enum.StrEnum):
    SUPPRESS = "SUPPRESS"
    LIFT = "LIFT"
    RESET_INACTIVE = "RESET_INACTIVE"
    ERASE = "ERASE"
    UNKNOWN = "UNKNOWN"


class CommandError(MailstreamError, ValueError):
    """A command that is malformed (invalid_command) or that the rules refuse
    (command_refused); the message says why."""

    default_kind = ErrorKind.INVALID_COMMAND


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    action: CommandAction
    recipient: str
    actor: str
    requested_at: int
    reason: SuppressionReason | None = None
    note: str | None = None
    force: bool = False
    command_id: str = ""
    tenant: str | None = None  # SUPPRESS and LIFT: that tenant's suppression; None: global

    def to_record(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id or uuid.uuid4().hex,
            "action": self.action.value,
            "recipient": self.recipient,
            "reason": self.reason.value if self.reason else None,
            "note": self.note,
            "actor": self.actor,
            "requested_at": self.requested_at,
            "force": self.force,
            "tenant": self.tenant,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OperatorCommand:
        """The command of a decoded record; CommandError (invalid_command) if it is none."""
        try:
            return cls(
                action=CommandAction(record["action"]),
                recipient=record["recipient"],
                actor=record["actor"],
                requested_at=record["requested_at"],
                reason=SuppressionReason(record["reason"]) if record.get("reason") else None,
                note=record.get("note"),
                force=bool(record.get("force")),
                command_id=record["command_id"],
                tenant=record.get("tenant"),
            )
        except (KeyError, ValueError) as error:
            raise CommandError(f"not an operator command: {error!r}") from error


def default_actor() -> str:
    """Who runs an operator command when nobody says: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def normalize_address(text: str) -> str:
    """The canonical form of an address typed by an operator; CommandError if it is none."""
    address = canonical_address(text)
    if not _ADDRESS.match(address):
        raise CommandError(f"{text!r} is not an email address (expected local@domain.tld)")
    return address


def check_command(command: OperatorCommand, written_at: int | None) -> None:
    """CommandError (invalid_command) unless the command names an address in its canonical
    form and was requested within MAX_COMMAND_SKEW_MS of `written_at` (its Kafka timestamp,
    when known): anyone who can write to the commands topic is not to be trusted blindly."""
    if not command.recipient or normalize_address(command.recipient) != command.recipient:
        raise CommandError(f"recipient {command.recipient[:320]!r} is not a canonical address")
    if not command.command_id or len(command.command_id) > MAX_COMMAND_ID_CHARS:
        raise CommandError(f"command_id must have 1 to {MAX_COMMAND_ID_CHARS} characters")
    reference = written_at if written_at is not None else command.requested_at
    if not 0 <= command.requested_at <= MAX_EPOCH_MS or (
        abs(command.requested_at - reference) > MAX_COMMAND_SKEW_MS
    ):
        raise CommandError(
            f"requested_at {command.requested_at} is not within a day of the record's "
            f"timestamp {written_at}"
        )


def parse_reason(text: str) -> SuppressionReason:
    try:
        reason = SuppressionReason(text.strip().upper().replace("-", "_"))
    except ValueError:
        reason = SuppressionReason.UNKNOWN
    if reason is SuppressionReason.UNKNOWN:
        known = ", ".join(
            r.value.lower() for r in SuppressionReason if r is not SuppressionReason.UNKNOWN
        )
        raise CommandError(f"unknown reason {text!r}: expected one of {known}")
    return reason


def apply_command(
    state: RecipientState | None, command: OperatorCommand, policy: Policy
) -> RecipientState:
    """The state after the command; the same object when it changes nothing (a repeat, a lift
    of an active recipient, a reset of an engaged one). CommandError (command_refused) when
    the rules refuse."""
    if state is not None and command.command_id in state.recent_event_ids:
        return state
    current = state or RecipientState(recipient=command.recipient)
    tenant = command.tenant
    target = tenant_view(current, tenant) if tenant is not None else current
    try:
        if command.action is CommandAction.SUPPRESS:
            changed = suppress_manually(
                target,
                command.reason or SuppressionReason.MANUAL,
                command.requested_at,
                command.note,
                force=command.force,
            )
        elif command.action is CommandAction.LIFT:
            changed = lift_suppression(target, command.requested_at, force=command.force)
        elif command.action is CommandAction.RESET_INACTIVE:
            changed = reset_if_inactive(current, command.requested_at, policy)
        else:
            raise CommandError(
                f"unknown command action {command.action!r}", ErrorKind.COMMAND_REFUSED
            )
    except SuppressionError as error:
        raise CommandError(str(error), ErrorKind.COMMAND_REFUSED) from error
    if tenant is not None and command.action is not CommandAction.RESET_INACTIVE:
        changed = current if changed is target else with_tenant_view(current, tenant, changed)
    if changed is current and state is not None:
        return state
    return remember(changed, command.command_id, policy)
