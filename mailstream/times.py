"""Times and durations as people type them: one reading for every command, query and file."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from mailstream.errors import TimeFormatError

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant ISO 8601 writes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
DURATION_FORMS = "a number and a unit (s, m, h, d, w), e.g. 90s, 30m, 2h, 7d, 2w"
INSTANT_FORMS = "ISO 8601 (2026-11-23T12:00:00Z) or epoch milliseconds"


def parse_duration_ms(text: str) -> int:
    """Milliseconds of `90s`, `30m`, `2h`, `7d` or `2w`; TimeFormatError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise TimeFormatError(f"duration {text!r}: expected {DURATION_FORMS}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def iso_epoch_ms(text: str) -> int:
    """Epoch milliseconds of ISO 8601 text, read as UTC when it has no offset; ValueError (the
    standard library's) when it is not ISO 8601."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS


def parse_instant_ms(text: str, now_ms: int | None = None) -> int:
    """Epoch milliseconds of ISO 8601 or epoch-millisecond text; with `now_ms`, also of a
    duration ago (`30m` is half an hour before `now_ms`). TimeFormatError otherwise."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    if now_ms is not None and _DURATION.match(value):
        return now_ms - parse_duration_ms(value)
    try:
        return iso_epoch_ms(value)
    except ValueError:
        ago = f", or a duration ago ({DURATION_FORMS})" if now_ms is not None else ""
        raise TimeFormatError(f"{text!r} is not a time: expected {INSTANT_FORMS}{ago}") from None
