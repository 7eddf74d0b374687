"""The project's typed errors: each carries a short machine-readable slug and a message a
human can act on, so the HTTP ingest, the CLI and the dead-letter topic report the same thing."""

from __future__ import annotations


class MailstreamError(Exception):
    """Base class of every error this project raises on purpose."""


class ParseError(MailstreamError):
    """A webhook body that cannot become canonical events.

    `kind` is one of: not_utf8, invalid_json, wrong_type, missing_field, invalid_value,
    unknown_provider, too_large. It is stable (dead letters and metrics group by it);
    the message names the offending field and what was expected.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class SignatureError(MailstreamError):
    """A webhook request whose authenticity is not established: answer 401 with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecodeError(MailstreamError):
    """Bytes from a Kafka topic that are not a record this codec can read.

    `kind` is one of: bad_magic, unknown_schema, corrupt_body.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
