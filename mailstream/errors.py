"""The project's one error vocabulary.

Every error mailstream raises on purpose is a `MailstreamError` with a `kind` from `ErrorKind`
(a short, stable slug: dead letters, metrics and the CLI group by it) and a message a human can
act on (it names the offending field, variable or record and what was expected), so the HTTP
ingest, the CLI and the dead-letter topic report the same thing.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorKind(enum.StrEnum):
    # A webhook body that cannot become canonical events (ParseError).
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_PROVIDER = "unknown_provider"
    TOO_LARGE = "too_large"
    # Bytes from a topic that are not a record the codec reads (DecodeError).
    BAD_MAGIC = "bad_magic"
    UNKNOWN_SCHEMA = "unknown_schema"
    CORRUPT_BODY = "corrupt_body"
    # What only the stream finds out.
    UNRESOLVED = "unresolved"  # an event whose recipient cannot be found
    MISPLACED = "misplaced"  # a canonical event keyed other than by its recipient
    INVALID_COMMAND = "invalid_command"  # an operator command that is not one
    COMMAND_REFUSED = "command_refused"  # an operator command the rules refuse
    INTERNAL_ERROR = "internal_error"  # a bug: anything raised that is not a MailstreamError
    # Errors answered to a caller, never dead-lettered.
    INVALID_SIGNATURE = "invalid_signature"
    KAFKA_UNAVAILABLE = "kafka_unavailable"  # Kafka did not confirm a write
    BAD_REQUEST = "bad_request"  # an HTTP request the ingest cannot read (e.g. broken gzip)
    REQUEST_TIMEOUT = "request_timeout"  # a client too slow to send its request
    OUTPUT_LOST = "output_lost"  # the worker's output was refused: it stops before committing
    INVALID_SETTING = "invalid_setting"
    INVALID_POLICY = "invalid_policy"
    INVALID_ENVELOPE = "invalid_envelope"
    INVALID_TIME = "invalid_time"
    INVALID_QUERY = "invalid_query"  # a query parameter of the worker's web server
    BROKER_FAILED = "broker_failed"
    REGISTRY_FAILED = "registry_failed"  # the local schema registry (mailstream registry)
    BROWSER_MISSING = "browser_missing"  # headless Chromium for the browser tests
    REGISTRY_UNAVAILABLE = "registry_unavailable"  # the configured schema registry
    REGISTRY_REFUSED = "registry_refused"  # a schema it refused (incompatible, unauthorized)
    REPLAY_FAILED = "replay_failed"
    ADMIN_FAILED = "admin_failed"  # a topic or consumer-group operation


# The kinds a dead letter may carry (the dead-letter topic's `error_kind`, `dlq --kind`).
DEAD_LETTER_KINDS: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.NOT_UTF8,
        ErrorKind.INVALID_JSON,
        ErrorKind.WRONG_TYPE,
        ErrorKind.MISSING_FIELD,
        ErrorKind.INVALID_VALUE,
        ErrorKind.UNKNOWN_PROVIDER,
        ErrorKind.TOO_LARGE,
        ErrorKind.BAD_MAGIC,
        ErrorKind.UNKNOWN_SCHEMA,
        ErrorKind.CORRUPT_BODY,
        ErrorKind.UNRESOLVED,
        ErrorKind.MISPLACED,
        ErrorKind.INVALID_COMMAND,
        ErrorKind.COMMAND_REFUSED,
        ErrorKind.INTERNAL_ERROR,
    }
)


class MailstreamError(Exception):
    """Base class of every error this project raises on purpose.

    A subclass sets its usual kind (`default_kind`); a raise site may give a more precise one.
    """

    default_kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL_ERROR

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind or self.default_kind


class ParseError(MailstreamError):
    """A webhook body that cannot become canonical events (kinds not_utf8 ... too_large)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message, kind)


class DecodeError(MailstreamError):
    """Bytes from a Kafka topic that are not a record this codec can read (bad_magic,
    unknown_schema, corrupt_body)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message, kind)


class SignatureError(MailstreamError):
    """A webhook request whose authenticity is not established: answered 401 with the message."""

    default_kind = ErrorKind.INVALID_SIGNATURE


class TimeFormatError(MailstreamError, ValueError):
    """Text that is not the time or duration expected; the message lists the accepted forms.
    A ValueError too, so argparse reports it as a bad argument."""

    default_kind = ErrorKind.INVALID_TIME
