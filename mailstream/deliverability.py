"""Deliverability health: events counted per sending team, sending domain and provider in
event-time buckets, summed over rolling windows and judged against the policy's thresholds.

Counting (the state step, streams/recipients.py): an event the recipient's timeline takes as
new is added to its bucket, one bucket per (source partition, dimension, bucket of event
time). Buckets sit in a ring of slots reaching back the longest window: an event older than its
slot's bucket is too old for any window and is not counted; a newer one starts the slot
afresh. Both keep the figures independent of arrival order. An event dated more than
MAX_CLOCK_SKEW_MS after the ingest received it is not counted (`too_far_ahead`): the windows
end at the newest event, and one from a wrong clock would empty them all.

Judging (streams/deliverability.py): the buckets of every partition summed per dimension, a
window ending at the end of the newest bucket of any event counted (event time), its rates
(`policy.yaml` documents them) judged with hysteresis (`judge`).

Diagnostics are the remote servers' own words and often quote the address; addresses are
masked before a diagnostic is kept (`mask_addresses`), so nothing here names a person.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from mailstream.events import BounceClass, EventType
from mailstream.policy import DeliverabilityPolicy, Policy

COUNTERS = (
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "blocks",
    "complaints",
    "unsubscribes",
    "human_opens",
    "human_clicks",
)
_FAILURES = ("hard_bounces", "soft_bounces", "blocks")
UNKNOWN_DOMAIN = "unknown"
UNKNOWN_REASON = "unknown"
MAX_DIAGNOSTIC_CHARS = 200
DIAGNOSTICS_PER_BUCKET = 3
DIAGNOSTICS_PER_WINDOW = 5
MAX_CLOCK_SKEW_MS = 15 * 60_000
SERIES_POINTS = 24  # a window's series has about this many steps (at least one bucket each)
# Keys of the buckets in the state table: no recipient address starts with a NUL byte.
BUCKET_KEY_PREFIX = b"\x00deliverability"

Dimension = tuple[str, str, str]  # (tenant, sending domain, provider)
Counts = dict[str, int]
Bucket = dict[str, Any]  # JSON-able: see `count`
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    CRITICAL = "CRITICAL"


SEVERITY = {Status.OK: 0, Status.WARN: 1, Status.CRITICAL: 2}


def sending_domain(sender: str | None) -> str:
    if not sender or "@" not in sender:
        return UNKNOWN_DOMAIN
    return sender.rpartition("@")[2].strip().lower()[:253] or UNKNOWN_DOMAIN


def dimension_of(event: Mapping[str, Any], policy: Policy) -> Dimension:
    return (
        event.get("tenant") or policy.default_tenant,
        sending_domain(event.get("sender")),
        event["provider"],
    )


def too_far_ahead(event: Mapping[str, Any]) -> bool:
    """Whether the event is dated later than MAX_CLOCK_SKEW_MS after the ingest received it:
    a wrong clock (or a forged date) that would move every window's end into the future."""
    received_at = event.get("received_at")
    return received_at is not None and event["occurred_at"] > received_at + MAX_CLOCK_SKEW_MS


def counter_of(event: Mapping[str, Any], machine: bool) -> str | None:
    """The counter an event adds to (None: not counted); `machine`: the policy's verdict on
    an open or click."""
    event_type = event["event_type"]
    if event_type == EventType.DELIVERED:
        return "delivered"
    bounce_class = event.get("bounce_class")
    if event_type == EventType.BOUNCED:
        if bounce_class == BounceClass.HARD:
            return "hard_bounces"
        return "blocks" if bounce_class == BounceClass.BLOCK else "soft_bounces"
    if event_type == EventType.REJECTED:
        return "blocks" if bounce_class == BounceClass.BLOCK else None
    if event_type == EventType.COMPLAINED:
        return "complaints"
    if event_type == EventType.UNSUBSCRIBED:
        return "unsubscribes"
    if event_type == EventType.OPENED:
        return None if machine else "human_opens"
    if event_type == EventType.CLICKED:
        return None if machine else "human_clicks"
    return None


def bucket_start(occurred_at: int, bucket_ms: int) -> int:
    return occurred_at - occurred_at % bucket_ms


def ring_slot(start: int, policy: DeliverabilityPolicy) -> int:
    """The slot of a bucket: the ring holds the longest window and one bucket more."""
    slots = policy.longest_window_ms // policy.bucket_ms + 1
    return (start // policy.bucket_ms) % slots


def bucket_key(partition: int, dimension: Dimension, slot: int) -> bytes:
    return BUCKET_KEY_PREFIX + orjson.dumps([partition, *dimension, slot])


def is_bucket_key(key: bytes) -> bool:
    return key.startswith(BUCKET_KEY_PREFIX)


def count(
    bucket: Mapping[str, Any] | None,
    partition: int,
    dimension: Dimension,
    start: int,
    counter: str,
    event: Mapping[str, Any],
) -> Bucket | None:
    """`bucket` (the slot's) with `event` counted under `counter`; None when the slot holds a
    newer bucket (the event is older than every window)."""
    if bucket is not None and bucket["start"] > start:
        return None
    if bucket is None or bucket["start"] < start:
        tenant, domain, provider = dimension
        bucket = {
            "partition": partition,
            "tenant": tenant,
            "domain": domain,
            "provider": provider,
            "start": start,
            "newest": start,
            "counts": {},
            "reasons": {},
            "diagnostics": [],
        }
    counts = dict(bucket["counts"])
    counts[counter] = counts.get(counter, 0) + 1
    counted = {**bucket, "counts": counts, "newest": max(bucket["newest"], event["occurred_at"])}
    if counter in _FAILURES:
        reason = event.get("bounce_reason") or UNKNOWN_REASON
        counted["reasons"] = {**bucket["reasons"], reason: bucket["reasons"].get(reason, 0) + 1}
        diagnostic = event.get("diagnostic")
        if diagnostic:
            counted["diagnostics"] = latest_diagnostics(
                [*bucket["diagnostics"], [event["occurred_at"], mask_addresses(diagnostic)]],
                DIAGNOSTICS_PER_BUCKET,
            )
    return counted


def mask_addresses(text: str) -> str:
    """`text` with every address masked, at most MAX_DIAGNOSTIC_CHARS long. A text cut short
    loses its last, partial word: it could be the start of an address."""
    masked = _ADDRESS.sub("<address>", _cut(text, MAX_DIAGNOSTIC_CHARS * 10))
    return _cut(masked, MAX_DIAGNOSTIC_CHARS)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rpartition(" ")[0]


def latest_diagnostics(dated: Iterable[list[Any]], limit: int) -> list[list[Any]]:
    """The `limit` latest distinct texts of [occurred_at, text] pairs, newest first; ties by
    text, so the choice does not depend on arrival order."""
    newest: dict[str, int] = {}
    for occurred_at, text in dated:
        if newest.get(text, -1) < occurred_at:
            newest[text] = occurred_at
    ranked = sorted(newest.items(), key=lambda item: (-item[1], item[0]))
    return [[occurred_at, text] for text, occurred_at in ranked[:limit]]


def add_counts(total: Counts, counts: Mapping[str, int], sign: int = 1) -> None:
    for name, value in counts.items():
        total[name] = total.get(name, 0) + sign * value


# rate -> (its numerator, whether its denominator is everything attempted or only delivered)
_RATE_TERMS = {
    "complaint_rate": ("complaints", False),
    "hard_bounce_rate": ("hard_bounces", True),
    "block_rate": ("blocks", True),
}


def rates_of(counts: Mapping[str, int]) -> dict[str, float | None]:
    volumes = _volumes(counts)
    return {
        rate: counts.get(numerator, 0) / volumes[rate] if volumes[rate] else None
        for rate, (numerator, _) in _RATE_TERMS.items()
    }


def _volumes(counts: Mapping[str, int]) -> dict[str, int]:
    """Each rate's denominator: delivered, or delivered plus every failure (attempted)."""
    delivered = counts.get("delivered", 0)
    attempted = delivered + sum(counts.get(name, 0) for name in _FAILURES)
    return {
        rate: attempted if all_attempts else delivered
        for rate, (_, all_attempts) in _RATE_TERMS.items()
    }


def judge(
    counts: Mapping[str, int], previous: Status, policy: DeliverabilityPolicy
) -> tuple[Status, list[str]]:
    """The window's status and why. A rate at or above a level raises the status to it; a
    status held before stays while the rate is at or above the level times recovery_ratio,
    and while a rate has some volume but less than minimum_volume (an empty window is OK)."""
    rates = rates_of(counts)
    volumes = _volumes(counts)
    status = Status.OK
    findings = []
    held = False
    for rate, levels in policy.thresholds:
        value = rates[rate]
        volume = volumes[rate]
        if value is None or volume < policy.minimum_volume:
            if volume:
                findings.append(f"{rate} not judged: volume {volume} < {policy.minimum_volume}")
                held = True  # too little to judge is not a recovery; nothing at all is
            continue
        for level, threshold in ((Status.CRITICAL, levels.critical), (Status.WARN, levels.warn)):
            holds = SEVERITY[previous] >= SEVERITY[level]
            if value >= threshold or (holds and value >= threshold * policy.recovery_ratio):
                findings.append(
                    f"{rate} {value:.2%} >= {level.value.lower()} {threshold:.2%}"
                    if value >= threshold
                    else f"{rate} {value:.2%} still above {threshold * policy.recovery_ratio:.2%}"
                    f" (recovery from {level.value.lower()} {threshold:.2%})"
                )
                if SEVERITY[level] > SEVERITY[status]:
                    status = level
                break
    if held and SEVERITY[previous] > SEVERITY[status]:
        findings.append(f"{previous.value} held: too little volume to judge a recovery")
        status = previous
    return status, findings


def series_step_ms(window_ms: int, policy: DeliverabilityPolicy) -> int:
    """About SERIES_POINTS steps per window, each a whole number of buckets."""
    buckets = max(1, window_ms // policy.bucket_ms // SERIES_POINTS)
    return buckets * policy.bucket_ms


def window_record(
    dimension: Dimension,
    window: tuple[str, int],
    end: int,
    buckets: Iterable[Mapping[str, Any]],
    status: Status,
    findings: list[str],
    policy: DeliverabilityPolicy,
) -> dict[str, Any]:
    """The `Deliverability` record (schemas/deliverability.avsc) of one window ending at
    `end`, from the buckets of every partition (those outside the window are left out)."""
    name, length = window
    start = end - length
    step = series_step_ms(length, policy)
    counts: Counts = dict.fromkeys(COUNTERS, 0)
    steps: dict[int, Counts] = {}
    reasons: Counts = {}
    diagnostics: list[list[Any]] = []
    for bucket in buckets:
        if not start <= bucket["start"] < end:
            continue
        add_counts(counts, bucket["counts"])
        point = start + (bucket["start"] - start) // step * step
        add_counts(steps.setdefault(point, dict.fromkeys(COUNTERS, 0)), bucket["counts"])
        add_counts(reasons, bucket["reasons"])
        diagnostics.extend(bucket["diagnostics"])
    tenant, domain, provider = dimension
    return {
        "tenant": tenant,
        "domain": domain,
        "provider": provider,
        "window": name,
        "window_start": start,
        "window_end": end,
        "counts": counts,
        **rates_of(counts),
        "status": status.value,
        "findings": findings,
        "series": [{"start": point, "counts": steps[point]} for point in sorted(steps)],
        "bounce_reasons": reasons,
        "diagnostics": [
            text for _, text in latest_diagnostics(diagnostics, DIAGNOSTICS_PER_WINDOW)
        ],
    }


def record_key(dimension: Dimension, window: str) -> bytes:
    """The key of `email.deliverability` and `email.alerts`: [tenant, domain, provider, window]."""
    return orjson.dumps([*dimension, window])


def alert_record(
    dimension: Dimension,
    window: str,
    previous: Status,
    status: Status,
    end: int,
    counts: Mapping[str, int],
    findings: list[str],
) -> dict[str, Any]:
    """The `DeliverabilityAlert` record of a status change; its id is the same on a repeat."""
    identity = orjson.dumps([*dimension, window, previous.value, status.value, end])
    tenant, domain, provider = dimension
    return {
        "alert_id": hashlib.sha256(identity).hexdigest()[:32],
        "tenant": tenant,
        "domain": domain,
        "provider": provider,
        "window": window,
        "previous_status": previous.value,
        "status": status.value,
        "window_end": end,
        "delivered": counts.get("delivered", 0),
        **rates_of(counts),
        "findings": findings,
    }
