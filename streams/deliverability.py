"""The deliverability windows of every partition's buckets, judged and published.

The state step publishes each bucket it counts into (mailstream.deliverability) on
`email.deliverability.buckets`, one partition, so one agent sees every partition's buckets.
`DeliverabilityWindows` keeps them in its table (the latest snapshot per bucket key: a repeat,
or an older snapshot redelivered after a newer one, changes nothing) and, in memory, their
sums per dimension and start and each window's running sum. The windows end at the end of
the newest bucket counted anywhere (event time).

Each bucket judges its dimension's windows, and an advance of the end judges every
dimension's; a status change is stored in the table with its alert and written to
`email.alerts`. After a restart (`load`) each window's latest alert is written again with the
same alert id: at least once, even when a crash stored the status and lost the alert. The
windows' records, with their series, are published on `email.deliverability` every
`interval` seconds for the dimensions that changed (`publishable`), outside the agent: they
are derived from the table and published again after a restart. A dimension with nothing
left in any window leaves the table and memory, and its records are tombstoned.

A snapshot that is not one (the topic is internal, but nothing may stop the agent) is a dead
letter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge

from mailstream.codec import AvroCodec
from mailstream.deliverability import (
    COUNTERS,
    SEVERITY,
    Counts,
    Dimension,
    Status,
    add_counts,
    alert_record,
    is_bucket_key,
    judge,
    record_key,
    window_record,
)
from mailstream.errors import ErrorKind
from mailstream.policy import RATES, DeliverabilityPolicy
from mailstream.streams.records import Output, SourceRecord, dead_letter
from mailstream.topics import TopicNames

Table = MutableMapping[bytes, dict[str, Any]]
_STATUS_KEY_PREFIX = b"\x00status"


class DeliverabilityWindows:
    def __init__(
        self,
        names: TopicNames,
        policy: DeliverabilityPolicy,
        record_codec: AvroCodec,
        alert_codec: AvroCodec,
        dead_letter_codec: AvroCodec,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._names = names
        self._policy = policy
        self._record_codec = record_codec
        self._alert_codec = alert_codec
        self._dead_letter_codec = dead_letter_codec
        self.loaded = False
        self._buckets: dict[Dimension, dict[bytes, dict[str, Any]]] = {}
        self._per_start: dict[Dimension, dict[int, Counts]] = {}
        self._sums: dict[tuple[Dimension, str], Counts] = {}
        self._statuses: dict[tuple[Dimension, str], Status] = {}
        self._end = 0
        self._changed: set[Dimension] = set()
        self._rates = Gauge(
            "mailstream_deliverability_rate",
            "A deliverability window's rate (fraction; absent until something was delivered)",
            ["tenant", "domain", "provider", "window", "rate"],
            registry=registry,
        )
        self._status = Gauge(
            "mailstream_deliverability_status",
            "A deliverability window's status: 0 OK, 1 WARN, 2 CRITICAL",
            ["tenant", "domain", "provider", "window"],
            registry=registry,
        )

    @property
    def end(self) -> int:
        return self._end

    def process(self, record: SourceRecord, table: Table) -> list[Output]:
        outputs = [] if self.loaded else self.load(table)
        if record.key is None or record.value is None or not is_bucket_key(record.key):
            return outputs
        try:
            bucket = _snapshot(record.value)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            message = f"not a deliverability bucket snapshot: {error!r}"
            return [*outputs, self._dead_letter(record, message)]
        stored = table.get(record.key)
        if stored is not None and _version(stored) >= _version(bucket):
            return outputs  # a repeat, or an older snapshot redelivered after a newer one
        table[record.key] = bucket
        dimension: Dimension = (bucket["tenant"], bucket["domain"], bucket["provider"])
        advanced = self._advance(bucket["start"] + self._policy.bucket_ms)
        self._place(dimension, record.key, bucket)
        self._changed.add(dimension)
        judged = list(self._buckets) if advanced else [dimension]
        return outputs + [alert for each in judged for alert in self._judge(each, table)]

    def load(self, table: Table) -> list[Output]:
        """Rebuild the in-memory view from the table (after recovery); every window is
        published again at the next `publishable`, and each window's latest alert sent again
        (the same alert id): one lost in a crash after its status was stored is not lost."""
        self.forget()
        self.loaded = True
        alerts = []
        for key, value in table.items():
            if key.startswith(_STATUS_KEY_PREFIX):
                tenant, domain, provider, window = orjson.loads(key[len(_STATUS_KEY_PREFIX) :])
                self._statuses[((tenant, domain, provider), window)] = Status(value["status"])
                alerts.append(self._alert_output(value["alert"]))
            elif is_bucket_key(key):
                self._end = max(self._end, value["start"] + self._policy.bucket_ms)
        for key, value in table.items():
            if is_bucket_key(key):
                self._place((value["tenant"], value["domain"], value["provider"]), key, value)
        self._changed.update(self._buckets)
        return alerts

    def stale(self, published: Iterable[bytes]) -> list[Output]:
        """Tombstones for the `published` keys of email.deliverability that name no window
        of the loaded table (after a replay, a crash before a tombstone, a window removed
        from the policy)."""
        current = {
            record_key(dimension, name)
            for dimension in self._buckets
            for name, _ in self._policy.windows
        }
        return [
            Output(self._names.deliverability, key, None, label="EXPIRED")
            for key in sorted(set(published) - current)
        ]

    def publishable(self) -> list[Output]:
        """The records of every window of the dimensions changed since the last call; a
        tombstone for the windows of a dimension with nothing left in any window."""
        changed, self._changed = self._changed, set()
        outputs = []
        for dimension in sorted(changed):
            expired = not self._per_start.get(dimension)
            for window in self._policy.windows:
                name = window[0]
                key = record_key(dimension, name)
                if expired:
                    self._forget_gauges(dimension, name)
                    outputs.append(Output(self._names.deliverability, key, None, label="EXPIRED"))
                    continue
                status = self._statuses.get((dimension, name), Status.OK)
                counts = self._sums.get((dimension, name), {})
                _, findings = judge(counts, status, self._policy)
                record = window_record(
                    dimension,
                    window,
                    self._end,
                    self._buckets[dimension].values(),
                    status,
                    findings,
                    self._policy,
                )
                self._export(dimension, name, record)
                value = self._record_codec.encode(record)
                outputs.append(Output(self._names.deliverability, key, value, label=status.value))
            if expired:
                self._evict(dimension)
        return outputs

    def forget(self) -> None:
        """Drop the in-memory view (the partition went to another worker, or came back after
        a rebalance); `load` rebuilds it from the table."""
        self.loaded = False
        self._buckets.clear()
        self._per_start.clear()
        self._sums.clear()
        self._statuses.clear()
        self._changed.clear()
        self._end = 0

    def _advance(self, end: int) -> bool:
        """Move the windows' end to `end` if later: buckets leave each window's sum, and
        every dimension's windows change."""
        old_end = self._end
        if end <= old_end:
            return False
        self._end = end
        step = self._policy.bucket_ms
        for dimension, per_start in self._per_start.items():
            for name, length in self._policy.windows:
                sums = self._sums.setdefault((dimension, name), {})
                low, high = old_end - length, min(end - length, old_end)
                if (high - low) // step < len(per_start):
                    leaving = (start for start in range(low, high, step) if start in per_start)
                else:
                    leaving = (start for start in per_start if low <= start < high)
                for start in list(leaving):
                    add_counts(sums, per_start[start], -1)
            horizon = end - self._policy.longest_window_ms
            for start in [start for start in per_start if start < horizon]:
                del per_start[start]
        self._changed.update(self._buckets)
        return True

    def _place(self, dimension: Dimension, key: bytes, bucket: Mapping[str, Any]) -> None:
        """Put the snapshot `bucket` at `key`, moving the sums by its difference from the
        snapshot it replaces (the same bucket counted further, or an older one in its slot)."""
        buckets = self._buckets.setdefault(dimension, {})
        previous = buckets.get(key)
        buckets[key] = dict(bucket)
        if previous is not None:
            self._add(dimension, previous["start"], previous["counts"], -1)
        self._add(dimension, bucket["start"], bucket["counts"], 1)

    def _add(self, dimension: Dimension, start: int, counts: Mapping[str, int], sign: int) -> None:
        if start < self._end - self._policy.longest_window_ms:
            return  # outside every window: not in the sums, not kept
        add_counts(self._per_start.setdefault(dimension, {}).setdefault(start, {}), counts, sign)
        for name, length in self._policy.windows:
            if self._end - length <= start < self._end:
                add_counts(self._sums.setdefault((dimension, name), {}), counts, sign)

    def _judge(self, dimension: Dimension, table: Table) -> list[Output]:
        """Alerts for the windows of `dimension` whose status changed, the statuses stored. A
        dimension with nothing left in any window leaves the table (buckets and statuses)."""
        alerts = []
        for name, _ in self._policy.windows:
            counts = self._sums.get((dimension, name), {})
            previous = self._statuses.get((dimension, name), Status.OK)
            status, findings = judge(counts, previous, self._policy)
            if status is previous:
                continue
            self._statuses[(dimension, name)] = status
            alert = alert_record(dimension, name, previous, status, self._end, counts, findings)
            table[_STATUS_KEY_PREFIX + record_key(dimension, name)] = {
                "status": status.value,
                "alert": alert,
            }
            alerts.append(self._alert_output(alert))
        if not self._per_start.get(dimension):
            for key in self._buckets.get(dimension, {}):
                table.pop(key, None)
            for name, _ in self._policy.windows:
                table.pop(_STATUS_KEY_PREFIX + record_key(dimension, name), None)
                self._statuses.pop((dimension, name), None)
        return alerts

    def _alert_output(self, alert: Mapping[str, Any]) -> Output:
        dimension = (alert["tenant"], alert["domain"], alert["provider"])
        return Output(
            self._names.alerts,
            record_key(dimension, alert["window"]),
            self._alert_codec.encode(alert),
            label=alert["status"],
        )

    def _evict(self, dimension: Dimension) -> None:
        self._buckets.pop(dimension, None)
        self._per_start.pop(dimension, None)
        for name, _ in self._policy.windows:
            self._sums.pop((dimension, name), None)

    def _export(self, dimension: Dimension, window: str, record: Mapping[str, Any]) -> None:
        labels = (*dimension, window)
        self._status.labels(*labels).set(SEVERITY[Status(record["status"])])
        for rate in RATES:
            value = record[rate]
            if value is not None:
                self._rates.labels(*labels, rate).set(value)

    def _forget_gauges(self, dimension: Dimension, window: str) -> None:
        labels = (*dimension, window)
        with contextlib.suppress(KeyError):
            self._status.remove(*labels)
        for rate in RATES:
            with contextlib.suppress(KeyError):
                self._rates.remove(*labels, rate)

    def _dead_letter(self, record: SourceRecord, message: str) -> Output:
        return dead_letter(
            self._dead_letter_codec,
            self._names.dead_letters,
            record,
            ErrorKind.INTERNAL_ERROR,
            message,
            None,
        )


def _snapshot(value: bytes) -> dict[str, Any]:
    """A bucket snapshot as the state step writes it; KeyError or TypeError when a field the
    sums read is missing or of the wrong type."""
    bucket: dict[str, Any] = orjson.loads(value)
    for name in ("tenant", "domain", "provider"):
        if not isinstance(bucket[name], str):
            raise TypeError(f"{name}: expected a string")
    for name in ("start", "offset", "newest"):
        if type(bucket[name]) is not int:
            raise TypeError(f"{name}: expected an integer")
    if not isinstance(bucket["counts"], dict) or not all(
        name in COUNTERS and type(value) is int for name, value in bucket["counts"].items()
    ):
        raise TypeError("counts: expected counters and integers")
    if not isinstance(bucket["reasons"], dict) or not isinstance(bucket["diagnostics"], list):
        raise TypeError("reasons, diagnostics: expected a mapping and a list")
    return bucket


def _version(bucket: Mapping[str, Any]) -> tuple[int, int]:
    """Snapshots of one key are ordered by their bucket, then by the last offset counted."""
    return bucket["start"], bucket["offset"]
