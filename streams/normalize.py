"""Raw webhook records to canonical events: parse, resolve the recipient, encode.

Where an Inboxroad bounce becomes a canonical event: `connectors/inboxroad.py` parses it;
this step adds what only the stream knows (the recipient of a message whose later events do
not name it, when the message was delivered) and dead-letters what cannot be processed.

An event whose recipient is erased (`mailstream erase`) is dropped without any output and
counted in `erased_dropped`; the messages table never keeps an erased recipient (a message's
entry that would name one is deleted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from mailstream.codec import AvroCodec
from mailstream.connectors.registry import parse
from mailstream.errors import ErrorKind, MailstreamError, ParseError
from mailstream.events import EmailEvent
from mailstream.messages import MessageInfo, message_key, route
from mailstream.policy import Policy
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.records import Output, SourceRecord, dead_letter
from mailstream.times import MAX_EPOCH_MS
from mailstream.topics import TopicNames

RECEIVED_AT_HEADER = "mailstream.received_at"
MAX_LISTED_UNRESOLVED = 20

MessageTable = MutableMapping[bytes, dict[str, Any]]


class Normalizer:
    """Turns one raw record into canonical events on `email.events` or dead letters."""

    def __init__(
        self,
        names: TopicNames,
        providers: Mapping[str, str],
        policy: Policy,
        event_codec: AvroCodec,
        dead_letter_codec: AvroCodec,
        erased: ErasedAddresses,
    ) -> None:
        self._names = names
        self._provider_of_topic = providers
        self._policy = policy
        self._event_codec = event_codec
        self._dead_letter_codec = dead_letter_codec
        self._erased = erased
        self.erased_dropped: Counter[str] = Counter()  # source topic -> events dropped

    def process(self, record: SourceRecord, messages: MessageTable) -> list[Output]:
        """The outputs of one raw record: its canonical events, and at most one dead letter
        (whatever the record holds, its payload is dead-lettered once)."""
        provider = self._provider_of_topic.get(record.topic)
        try:
            if provider is None:
                raise ParseError(
                    ErrorKind.UNKNOWN_PROVIDER, f"no provider reads topic {record.topic}"
                )
            events = parse(provider, record.value or b"", _received_at(record))
            return self._resolve_all(record, provider, events, messages)
        except MailstreamError as error:
            return [self._dead_letter(record, error.kind, error.message, provider)]
        except Exception as error:  # a bug or a hostile record must not stop the stream
            return [self._dead_letter(record, ErrorKind.INTERNAL_ERROR, repr(error), provider)]

    def _resolve_all(
        self,
        record: SourceRecord,
        provider: str,
        events: list[EmailEvent],
        messages: MessageTable,
    ) -> list[Output]:
        outputs: list[Output] = []
        unresolved: list[tuple[int, EmailEvent, str]] = []
        for index, event in enumerate(events):
            ready, dead = self._resolve(record.topic, provider, event, messages)
            outputs.extend(ready)
            unresolved.extend((index, dead_event, reason) for dead_event, reason in dead)
        if unresolved:
            message = unresolved_summary(unresolved, len(events))
            outputs.append(self._dead_letter(record, ErrorKind.UNRESOLVED, message, provider))
        return outputs

    def _resolve(
        self, topic: str, provider: str, event: EmailEvent, messages: MessageTable
    ) -> tuple[list[Output], list[tuple[EmailEvent, str]]]:
        key = None
        info = None
        if event["message_id"] is not None:
            key = message_key(provider, event["message_id"]).encode()
            stored = messages.get(key)
            info = MessageInfo.from_record(stored) if stored is not None else None
        new_info, ready, dead = route(event, info, self._policy)
        if key is not None:
            self._store(messages, key, info, new_info)
        kept = [
            ready_event
            for ready_event in ready
            if not self._erased.is_erased(cast(str, ready_event["recipient"]))
        ]
        self.erased_dropped[topic] += len(ready) - len(kept)
        outputs = [
            Output(
                self._names.events,
                cast(str, ready_event["recipient"]).encode(),  # route resolved it
                self._event_codec.encode(ready_event),
                label=ready_event["event_type"],
            )
            for ready_event in kept
        ]
        return outputs, dead

    def _store(
        self,
        messages: MessageTable,
        key: bytes,
        stored: MessageInfo | None,
        changed: MessageInfo | None,
    ) -> None:
        """Write a message's changed info, unless the message maps to an erased recipient:
        then its entry goes (a stored one too)."""
        recipient = (changed or stored or MessageInfo()).recipient
        if recipient is not None and self._erased.is_erased(recipient):
            messages.pop(key, None)
        elif changed is not None:
            messages[key] = changed.to_record()

    def _dead_letter(
        self, record: SourceRecord, kind: ErrorKind, message: str, provider: str | None
    ) -> Output:
        return dead_letter(
            self._dead_letter_codec, self._names.dead_letters, record, kind, message, provider
        )


def unresolved_summary(unresolved: list[tuple[int, EmailEvent, str]], total: int) -> str:
    """One message for every unresolved event of a record: their indexes, ids and reasons,
    the first MAX_LISTED_UNRESOLVED of them (a dead letter stays small, whatever the batch)."""
    listed = "; ".join(
        f"event {index} ({event['event_id'][:80]}): {reason}"
        for index, event, reason in unresolved[:MAX_LISTED_UNRESOLVED]
    )
    more = len(unresolved) - MAX_LISTED_UNRESOLVED
    rest = f"; and {more} more" if more > 0 else ""
    return f"{len(unresolved)} of {total} events unresolved: {listed}{rest}"


def _received_at(record: SourceRecord) -> int | None:
    """The ingest's receive time when the header holds a plausible one, else the record's."""
    received_at = record.int_header(RECEIVED_AT_HEADER)
    if received_at is not None and received_at <= MAX_EPOCH_MS:
        return received_at
    return record.timestamp
