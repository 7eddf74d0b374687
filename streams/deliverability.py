"""The deliverability windows of every partition's buckets, judged and published.

The state step publishes each bucket it counts into (mailstream.deliverability) on
`email.deliverability.buckets`, one partition, so one agent sees every partition's buckets.
`DeliverabilityWindows` keeps them in its table (the latest snapshot per bucket key: a repeat,
or an older snapshot redelivered after a newer one, changes nothing) and, in memory, their
sums per dimension and start and each window's running sum. The windows end at the end of
the newest bucket counted anywhere (event time).

Each bucket judges its dimension's windows, and an advance of the end judges every
dimension's; a status change is stored in the table and written to `email.alerts` (at least
once: a repeat carries the same alert id). The windows' records, with their series, are
published on `email.deliverability` every `interval` seconds for the dimensions that changed
(`publishable`), outside the agent: they are derived from the table and published again after
a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge

from mailstream.codec import AvroCodec
from mailstream.deliverability import (
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
from mailstream.policy import RATES, DeliverabilityPolicy
from mailstream.streams.records import Output, SourceRecord
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
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._names = names
        self._policy = policy
        self._record_codec = record_codec
        self._alert_codec = alert_codec
        self._loaded = False
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
        if not self._loaded:
            self._load(table)
        if record.key is None or record.value is None or not is_bucket_key(record.key):
            return []
        bucket: dict[str, Any] = orjson.loads(record.value)
        stored = table.get(record.key)
        if stored is not None and _version(stored) >= _version(bucket):
            return []  # a repeat, or an older snapshot redelivered after a newer one
        table[record.key] = bucket
        dimension: Dimension = (bucket["tenant"], bucket["domain"], bucket["provider"])
        advanced = self._advance(bucket["start"] + self._policy.bucket_ms)
        self._place(dimension, record.key, bucket)
        self._changed.add(dimension)
        judged = self._buckets if advanced else (dimension,)
        return [alert for each in list(judged) for alert in self._judge(each, table)]

    def publishable(self) -> list[Output]:
        """The records of every window of the dimensions changed since the last call."""
        changed, self._changed = self._changed, set()
        outputs = []
        for dimension in sorted(changed):
            for window in self._policy.windows:
                name = window[0]
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
                outputs.append(
                    Output(
                        self._names.deliverability,
                        record_key(dimension, name),
                        self._record_codec.encode(record),
                        label=status.value,
                    )
                )
        return outputs

    def forget(self) -> None:
        """Drop the in-memory view (the partition went to another worker); the table
        rebuilds it when this worker is given the partition again."""
        self._loaded = False
        self._buckets.clear()
        self._per_start.clear()
        self._sums.clear()
        self._statuses.clear()
        self._changed.clear()
        self._end = 0

    def _load(self, table: Table) -> None:
        self.forget()
        self._loaded = True
        for key, value in table.items():
            if key.startswith(_STATUS_KEY_PREFIX):
                tenant, domain, provider, window = orjson.loads(key[len(_STATUS_KEY_PREFIX) :])
                self._statuses[((tenant, domain, provider), window)] = Status(value["status"])
            elif is_bucket_key(key):
                self._end = max(self._end, value["start"] + self._policy.bucket_ms)
        for key, value in table.items():
            if is_bucket_key(key):
                dimension = (value["tenant"], value["domain"], value["provider"])
                self._place(dimension, key, value)
        self._changed.update(self._buckets)

    def _advance(self, end: int) -> bool:
        """Move the windows' end to `end` if later: buckets leave each window's sum."""
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
        alerts = []
        for name, _ in self._policy.windows:
            counts = self._sums.get((dimension, name), {})
            previous = self._statuses.get((dimension, name), Status.OK)
            status, findings = judge(counts, previous, self._policy)
            if status is previous:
                continue
            self._statuses[(dimension, name)] = status
            self._changed.add(dimension)
            key = record_key(dimension, name)
            table[_STATUS_KEY_PREFIX + key] = {"status": status.value, "since": self._end}
            alert = alert_record(dimension, name, previous, status, self._end, counts, findings)
            alerts.append(
                Output(self._names.alerts, key, self._alert_codec.encode(alert), label=status.value)
            )
        return alerts

    def _export(self, dimension: Dimension, window: str, record: Mapping[str, Any]) -> None:
        labels = (*dimension, window)
        severity = {Status.OK: 0, Status.WARN: 1, Status.CRITICAL: 2}
        self._status.labels(*labels).set(severity[Status(record["status"])])
        for rate in RATES:
            value = record[rate]
            if value is not None:
                self._rates.labels(*labels, rate).set(value)


def _version(bucket: Mapping[str, Any]) -> tuple[int, int]:
    """Snapshots of one key are ordered by their bucket, then by the last offset counted."""
    return bucket["start"], bucket["offset"]
