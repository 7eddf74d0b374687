"""Erasure ("forget this person"): the keyed hash that stands in for an erased address.

An erased address is never stored again, in clear or as a plain hash (a dictionary of likely
addresses would reverse an unkeyed one): the erasures topic keeps the HMAC-SHA256 of its
canonical form under the deployment's secret (MAILSTREAM_ERASURE_KEY), who asked and when.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mailstream.addresses import canonical_address
from mailstream.commands import CommandError, OperatorCommand
from mailstream.errors import ErrorKind, MailstreamError

ERASURE_KEY_VARIABLE = "MAILSTREAM_ERASURE_KEY"


class ErasureKeyMissing(MailstreamError):
    """An erasure attempted where no erasure key is configured (a configuration error)."""

    default_kind = ErrorKind.INVALID_SETTING

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or f"{ERASURE_KEY_VARIABLE} is not set: erasure needs the deployment's secret key "
            "to hash erased addresses"
        )


def required_key(key: str | None) -> str:
    """`key` itself; ErasureKeyMissing when there is none (None or empty)."""
    if not key:
        raise ErasureKeyMissing()
    return key


def address_hash(address: str, key: str) -> str:
    """Lower-case hex HMAC-SHA256 of the canonical address (utf-8) keyed with `key` (utf-8)."""
    return hmac.new(key.encode(), canonical_address(address).encode(), hashlib.sha256).hexdigest()


def key_id(key: str) -> str:
    """Which key hashed an erasure, without revealing it: services compare it with their own
    key's before trusting that they recognize the erased addresses."""
    return hmac.new(key.encode(), _KEY_ID_TEXT, hashlib.sha256).hexdigest()[:16]


_KEY_ID_TEXT = b"mailstream erasure key id"


class ErasureKeyMismatch(MailstreamError):
    """Erasures hashed with another key than this service's: their addresses would read as
    never erased."""

    default_kind = ErrorKind.INVALID_SETTING


def check_note(note: str | None, address: str) -> None:
    """CommandError (invalid_command) when an erasure's note holds the address it erases: the
    note is kept on the erasures topic for good."""
    if note is not None and canonical_address(address) in note.lower():
        raise CommandError("the note of an erasure must not hold the address (it is kept)")


def erasure_record(command: OperatorCommand, key: str) -> dict[str, Any]:
    """The Erasure record of an ERASE command: who and when, the address only as its hash."""
    return {
        "address_hash": address_hash(command.recipient, key),
        "key_id": key_id(key),
        "erased_at": command.requested_at,
        "command_id": command.command_id,
        "actor": command.actor,
        "note": command.note,
    }
