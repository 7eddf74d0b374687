"""Raw webhook records to canonical events: parse, resolve the recipient, encode.

Where an Inboxroad bounce becomes a canonical event: `connectors/inboxroad.py` parses it;
this step adds what only the stream knows (the recipient of a message whose later events do
not name it, when the message was delivered) and dead-letters what cannot be processed.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from mailstream.codec import AvroCodec
from mailstream.connectors.registry import parse
from mailstream.errors import ErrorKind, MailstreamError, ParseError
from mailstream.events import EmailEvent
from mailstream.messages import MessageInfo, message_key, route
from mailstream.policy import Policy
from mailstream.streams.records import Output, SourceRecord, dead_letter
from mailstream.topics import TopicNames

RECEIVED_AT_HEADER = "mailstream.received_at"

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
    ) -> None:
        self._names = names
        self._provider_of_topic = providers
        self._policy = policy
        self._event_codec = event_codec
        self._dead_letter_codec = dead_letter_codec

    def process(self, record: SourceRecord, messages: MessageTable) -> list[Output]:
        provider = self._provider_of_topic.get(record.topic)
        try:
            if provider is None:
                raise ParseError(
                    ErrorKind.UNKNOWN_PROVIDER, f"no provider reads topic {record.topic}"
                )
            events = parse(provider, record.value or b"", _received_at(record))
        except MailstreamError as error:
            return [self._dead_letter(record, error.kind, error.message, provider)]
        except Exception as error:
            return [self._dead_letter(record, ErrorKind.INTERNAL_ERROR, repr(error), provider)]
        outputs: list[Output] = []
        for event in events:
            outputs.extend(self._resolve(record, provider, event, messages))
        return outputs

    def _resolve(
        self, record: SourceRecord, provider: str, event: EmailEvent, messages: MessageTable
    ) -> list[Output]:
        key = None
        info = None
        if event["message_id"] is not None:
            key = message_key(provider, event["message_id"]).encode()
            stored = messages.get(key)
            info = MessageInfo.from_record(stored) if stored is not None else None
        new_info, ready, dead = route(event, info, self._policy)
        if new_info is not None and key is not None:
            messages[key] = new_info.to_record()
        outputs = [
            Output(
                self._names.events,
                cast(str, ready_event["recipient"]).encode(),  # route resolved it
                self._event_codec.encode(ready_event),
            )
            for ready_event in ready
        ]
        outputs.extend(
            self._dead_letter(record, ErrorKind.UNRESOLVED, reason, provider) for _, reason in dead
        )
        return outputs

    def _dead_letter(
        self, record: SourceRecord, kind: ErrorKind, message: str, provider: str | None
    ) -> Output:
        return dead_letter(
            self._dead_letter_codec, self._names.dead_letters, record, kind, message, provider
        )


def _received_at(record: SourceRecord) -> int | None:
    raw = record.header(RECEIVED_AT_HEADER)
    if raw:
        try:
            return int(raw)
        except ValueError:
            pass
    return record.timestamp
