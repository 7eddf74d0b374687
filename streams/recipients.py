"""Canonical events to per-recipient state, published on the compacted topics.

The rules themselves live in `mailstream.recipient.apply`; this step decodes, keeps the table
and decides what to publish. Every processed event republishes the recipient's state, even a
duplicate: after a crash between the table write and the publish, the redelivered event finds
the state already updated (apply changes nothing) and the publish still happens.

Operator commands (manual suppression, lifting it, the inactivity sweep's reset, erasure)
arrive on the commands topic, co-partitioned with email.events, and go through the same table;
what they publish carries the command id and actor in its headers.

Deliverability buckets (mailstream.deliverability) live in the same table, under keys no
address has (`is_bucket_key`). An event the timeline takes as new is counted in its bucket,
and the bucket written before the recipient's entry: both go to the same changelog
partition, in order, from the idempotent producer, so after a crash a stored entry means a
stored bucket, and a bucket that already counted the event's offset (`offset`) is not counted
again. The buckets an event counts in (or would have: a repeat) wait in `unpublished`, the
latest snapshot per bucket, until `take_bucket_snapshots` before the next offset commit
(streams/app.py): one record per bucket changed between commits, not one per event, and
none of the events counted is committed before its bucket is published.

An ERASE deletes the recipient's entry, tombstones its keys on the published topics and
publishes an Erasure record (the address's keyed hash, who and when) on email.erasures. Every
later record of an erased address is dropped without any output, not even a dead letter
(which would store the address again), and counted in `erased_dropped`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import orjson

from mailstream.codec import AvroCodec
from mailstream.commands import (
    CommandAction,
    CommandError,
    OperatorCommand,
    check_command,
)
from mailstream.deliverability import (
    bucket_key,
    bucket_start,
    count,
    counter_of,
    dimension_of,
    is_bucket_key,
    ring_slot,
    too_far_ahead,
)
from mailstream.erasure import check_note, erasure_record, required_key
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.events import EventType
from mailstream.policy import Policy
from mailstream.recipient import (
    RecipientState,
    is_machine,
    scoped_suppressions,
    suppression_record,
)
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.records import Output, SourceRecord, dead_letter, partition_of
from mailstream.timeline import Timeline, add_command, add_event
from mailstream.topics import TopicNames

RecipientTable = MutableMapping[bytes, dict[str, Any]]
LIFTED = "LIFTED"  # the metrics label of a suppression's tombstone
ERASED = "ERASED"  # the metrics label of a suppression's tombstone by an erasure
FUTURE = "future"  # the reason label of events dated too far after their receipt
AuditHeaders = tuple[tuple[str, bytes], ...]


class StateKeeper:
    def __init__(
        self,
        names: TopicNames,
        policy: Policy,
        event_codec: AvroCodec,
        state_codec: AvroCodec,
        suppression_codec: AvroCodec,
        command_codec: AvroCodec,
        dead_letter_codec: AvroCodec,
        erasure_codec: AvroCodec,
        erased: ErasedAddresses,
        partitions: int,
    ) -> None:
        """`partitions`: of email.events and email.commands, which a recipient's records
        must share (its table entry lives in the partition of its key). `erased`: the set of
        erased addresses, which an ERASE adds to at once."""
        self._partitions = partitions
        self._names = names
        self._policy = policy
        self._event_codec = event_codec
        self._state_codec = state_codec
        self._suppression_codec = suppression_codec
        self._command_codec = command_codec
        self._dead_letter_codec = dead_letter_codec
        self._erasure_codec = erasure_codec
        self._erased = erased
        self.erased_dropped: Counter[str] = Counter()  # source topic -> records dropped
        self._unpublished: dict[bytes, dict[str, Any]] = {}  # bucket key -> latest snapshot
        self.uncounted: Counter[str] = Counter()  # reason -> events left out of the buckets

    def take_bucket_snapshots(self) -> list[Output]:
        """The deliverability buckets changed (or repeated) since the last call, for
        email.deliverability.buckets; the caller publishes them before committing offsets."""
        unpublished, self._unpublished = self._unpublished, {}
        topic = self._names.deliverability_buckets
        return [Output(topic, key, orjson.dumps(bucket)) for key, bucket in unpublished.items()]

    def process(self, record: SourceRecord, recipients: RecipientTable) -> list[Output]:
        try:
            if record.topic == self._names.commands:
                return self._command(record, recipients)
            return self._event(record, recipients)
        except MailstreamError as error:
            return [self._dead_letter(record, error.kind, error.message)]
        except Exception as error:  # a bug or a hostile record must not stop the stream
            return [self._dead_letter(record, ErrorKind.INTERNAL_ERROR, repr(error))]

    def _event(self, record: SourceRecord, recipients: RecipientTable) -> list[Output]:
        event = self._event_codec.decode(record.value or b"")
        recipient = event.get("recipient")
        if not recipient:
            return [
                self._dead_letter(record, ErrorKind.UNRESOLVED, "canonical event without recipient")
            ]
        if self._erased.is_erased(recipient):
            return self._dropped(record)
        key = recipient.encode()
        if is_bucket_key(key):
            return [self._dead_letter(record, ErrorKind.INVALID_VALUE, "not an address")]
        if record.key != key:
            message = f"an event for {recipient[:320]!r} keyed {(record.key or b'')[:320]!r}"
            return [self._dead_letter(record, ErrorKind.MISPLACED, message)]
        stored = recipients.get(key)
        before = Timeline.from_record(stored) if stored is not None else None
        after = add_event(before, event, self._policy)
        entry = after.to_table_record() if after is not before else None
        state = after.state
        late = before is not None and state.late_events > before.state.late_events
        outputs = [
            Output(
                self._names.recipient_state,
                key,
                self._state_codec.encode(state.to_record()),
                label="late" if late else "",
                received_at=event.get("received_at"),
                occurred_at=event.get("occurred_at"),
            ),
            *self._suppression_changes(
                key, before.state if before else None, state, event["event_id"]
            ),
        ]
        # The writes last, once nothing can fail (a dead letter must leave no count behind),
        # the bucket first (see the module's docstring).
        self._count(record, event, recipients, new=entry is not None)
        if entry is not None:
            recipients[key] = entry
        return outputs

    def _count(
        self, record: SourceRecord, event: Mapping[str, Any], table: RecipientTable, *, new: bool
    ) -> None:
        """Count the event in its deliverability bucket when `new` (and not already counted
        from this offset), and mark the bucket unpublished; nothing for an event that counts
        for no figure or is older than every window."""
        event_type = event["event_type"]
        opened = event_type == EventType.OPENED or event_type == EventType.CLICKED
        counter = counter_of(event, opened and is_machine(event, self._policy))
        if counter is None:
            return
        if too_far_ahead(event):
            self.uncounted[FUTURE] += 1
            return
        policy = self._policy.deliverability
        dimension = dimension_of(event, self._policy)
        start = bucket_start(event["occurred_at"], policy.bucket_ms)
        key = bucket_key(record.partition, dimension, ring_slot(start, policy))
        bucket = table.get(key)
        if new and (bucket is None or bucket["start"] != start or bucket["offset"] < record.offset):
            bucket = count(bucket, record.partition, dimension, start, counter, event)
            if bucket is None:
                return
            bucket["offset"] = record.offset
            table[key] = bucket
        if bucket is not None and bucket["start"] == start:
            self._unpublished[key] = bucket

    def _suppression_changes(
        self,
        key: bytes,
        before: RecipientState | None,
        after: RecipientState,
        cause_id: str,
        command: OperatorCommand | None = None,
        audit: tuple[tuple[str, bytes], ...] = (),
    ) -> list[Output]:
        """The records of `email.suppressions` (what a reader that knows no tenants must
        honour) and `email.suppressions.scoped` (one key per scope) that changed: a new cause
        is a new record, a lifted scope a tombstone. A suppression `cause_id` caused is
        published again (a redelivered event after a crash). For an operator `command`, the
        record or tombstone of the scope it names (a tenant, or global) and the unscoped one
        are published whatever changed, with the command's audit; its actor is named only on
        a suppression it made (an operator's, since its requested_at)."""
        commanded: tuple[str | None, ...] = (command.tenant,) if command is not None else ()
        if (
            command is None
            and not after.suppressed_for(None)
            and (before is None or not before.suppressed_for(None))
        ):
            return []  # the common case: nothing suppressed, before or after
        recipient = after.recipient
        scoped_before = scoped_suppressions(before) if before is not None else {}
        scoped_after = scoped_suppressions(after)
        shown_after = suppression_record(after)
        if command is not None:
            for scope in commanded:
                if scope in scoped_after and _made_by(scoped_after[scope], command):
                    scoped_after[scope] = scoped_after[scope] | {"actor": command.actor}
            if (
                shown_after is not None
                and shown_after["tenant"] in commanded
                and _made_by(shown_after, command)
            ):
                shown_after["actor"] = command.actor
        changes = [
            (
                self._names.suppressions,
                key,
                suppression_record(before) if before is not None else None,
                shown_after,
                bool(commanded),
            )
        ]
        scopes = scoped_before.keys() | scoped_after.keys() | set(commanded)
        for scope in sorted(scopes, key=lambda tenant: (tenant is not None, tenant or "")):
            changes.append(
                (
                    self._names.scoped_suppressions,
                    scoped_suppression_key(recipient, scope),
                    scoped_before.get(scope),
                    scoped_after.get(scope),
                    scope in commanded,
                )
            )
        outputs = []
        for topic, topic_key, old, new, forced in changes:
            if new is not None and (
                forced or old is None or _cause(old) != _cause(new) or new["event_id"] == cause_id
            ):
                value = self._suppression_codec.encode(new)
                outputs.append(Output(topic, topic_key, value, audit, label=new["reason"]))
            elif new is None and (old is not None or forced):
                outputs.append(Output(topic, topic_key, None, audit, label=LIFTED))
        return outputs

    def _command(self, record: SourceRecord, recipients: RecipientTable) -> list[Output]:
        try:
            command = OperatorCommand.from_record(self._command_codec.decode(record.value or b""))
            if command.action is not CommandAction.ERASE and self._erased.is_erased(
                command.recipient
            ):
                return self._dropped(record)
            check_command(command, record.timestamp)
            key = command.recipient.encode()
            self._check_placement(record, key)
        except MailstreamError as error:  # undecodable, not a command, or not where it belongs
            return [self._dead_letter(record, ErrorKind.INVALID_COMMAND, error.message)]
        audit = (
            ("mailstream.command_id", command.command_id.encode()),
            ("mailstream.actor", command.actor.encode()),
        )
        if command.action is CommandAction.ERASE:
            return self._erase(record, command, key, recipients, audit)
        stored = recipients.get(key)
        before = Timeline.from_record(stored) if stored is not None else None
        try:
            timeline = add_command(before, command, self._policy)
        except CommandError as error:
            return [self._dead_letter(record, error.kind, error.message)]
        if timeline is not before:
            recipients[key] = timeline.to_table_record()
        after = timeline.state
        outputs = [
            Output(
                self._names.recipient_state, key, self._state_codec.encode(after.to_record()), audit
            )
        ]
        if command.action is CommandAction.RESET_INACTIVE:
            return outputs
        outputs.extend(
            self._suppression_changes(
                key,
                before.state if before is not None else None,
                after,
                command.command_id,
                command,
                audit,
            )
        )
        return outputs

    def _erase(
        self,
        record: SourceRecord,
        command: OperatorCommand,
        key: bytes,
        recipients: RecipientTable,
        audit: AuditHeaders,
    ) -> list[Output]:
        """Forget the recipient: its entry deleted, its published keys tombstoned, its hash
        recorded (and known to this agent at once). A repeat publishes the tombstones again
        and keeps the first Erasure record (the audit of who erased, and when)."""
        try:
            check_note(command.note, command.recipient)
        except CommandError as error:
            return [self._dead_letter(record, ErrorKind.INVALID_COMMAND, error.message)]
        try:
            erasure = erasure_record(command, required_key(self._erased.key))
        except MailstreamError as error:  # no erasure key: the command cannot be applied
            return [self._dead_letter(record, ErrorKind.COMMAND_REFUSED, error.message)]
        repeated = self._erased.is_erased(command.recipient)
        self._erased.add(erasure["address_hash"])
        stored = recipients.pop(key, None)
        state = Timeline.from_record(stored).state if stored is not None else None
        tombstones = self._erased_outputs(key, state, audit)
        if repeated:
            return tombstones
        return [
            *tombstones,
            Output(
                self._names.erasures,
                erasure["address_hash"].encode(),
                self._erasure_codec.encode(erasure),
                audit,
            ),
        ]

    def _erased_outputs(
        self, key: bytes, state: RecipientState | None, audit: AuditHeaders
    ) -> list[Output]:
        """The tombstones of every key an erased recipient may have on the published topics.
        `state`: its last state (None if it had none), for keys derived from it."""
        scopes: set[str | None] = {None}
        if state is not None:
            scopes.update(state.tenants)
        recipient = key.decode()
        return [
            Output(self._names.recipient_state, key, None, audit),
            Output(self._names.suppressions, key, None, audit, label=ERASED),
            *(
                Output(
                    self._names.scoped_suppressions,
                    scoped_suppression_key(recipient, scope),
                    None,
                    audit,
                )
                for scope in sorted(scopes, key=lambda tenant: (tenant is not None, tenant or ""))
            ),
        ]

    def _dropped(self, record: SourceRecord) -> list[Output]:
        """No output at all for a record of an erased recipient: it is only counted."""
        self.erased_dropped[record.topic] += 1
        return []

    def _check_placement(self, record: SourceRecord, key: bytes) -> None:
        """CommandError unless the record is keyed and partitioned as its recipient's events
        are (a command elsewhere would change a table entry its events never read)."""
        if record.key != key:
            raise CommandError(f"a command for {key[:320]!r} keyed {(record.key or b'')[:320]!r}")
        expected = partition_of(key, self._partitions)
        if record.partition != expected:
            raise CommandError(
                f"a command for {key[:320]!r} on partition {record.partition}; its recipient's "
                f"records are on partition {expected} of {self._partitions}"
            )

    def _dead_letter(self, record: SourceRecord, kind: ErrorKind, message: str) -> Output:
        return dead_letter(
            self._dead_letter_codec, self._names.dead_letters, record, kind, message, None
        )


def scoped_suppression_key(recipient: str, tenant: str | None) -> bytes:
    """The key of `email.suppressions.scoped`: the JSON array [recipient, tenant], tenant
    null for the global suppression (unambiguous whatever the address or tenant holds)."""
    return orjson.dumps([recipient, tenant])


def _made_by(record: Mapping[str, Any], command: OperatorCommand) -> bool:
    """Whether a Suppression record is the one `command` made (not an event's, nor an
    earlier operator's that a refold kept)."""
    return record["event_id"] is None and record["since"] == command.requested_at


def _cause(record: Mapping[str, Any]) -> tuple[object, ...]:
    """What a Suppression record says about why: a change is published as a new record."""
    return (
        record["reason"],
        record["since"],
        record["event_id"],
        record["scope"],
        record["tenant"],
        record["note"],
    )


def recipient_records(table: Mapping[bytes, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The recipients' entries of the state table (not its deliverability buckets)."""
    return (value for key, value in table.items() if not is_bucket_key(key))
