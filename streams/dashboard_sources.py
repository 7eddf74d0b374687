"""What the dashboard shows, gathered by the worker: the compacted deliverability topic, the
latest alerts and dead letters (followed from the broker, started with the first page), the
suppression list, the consumer's lag and this worker's recipients table."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mailstream.codec import service_codec
from mailstream.commands import CommandError, normalize_address
from mailstream.deliverability import is_bucket_key
from mailstream.errors import MailstreamError
from mailstream.policy import DeliverabilityPolicy
from mailstream.settings import Settings
from mailstream.streams.dashboard import DashboardView
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.follower import TopicFollower
from mailstream.streams.queries import ERASED_ANSWER, rendered
from mailstream.streams.suppression_list import SuppressionList
from mailstream.timeline import Timeline
from mailstream.topics import TopicNames

LATEST_KEPT = 50
CATCH_UP_SECONDS = 10.0


class DashboardSources:
    def __init__(
        self,
        settings: Settings,
        policy: DeliverabilityPolicy,
        recipients: Mapping[bytes, dict[str, Any]],
        erased: ErasedAddresses,
        lag: Callable[[], dict[tuple[str, int], int]],
    ) -> None:
        self._settings = settings
        self._thresholds = {rate: (level.warn, level.critical) for rate, level in policy.thresholds}
        self._recipients = recipients
        self._erased = erased
        self._lag = lag
        self._lock = threading.Lock()
        self._windows: dict[bytes, dict[str, Any]] = {}
        self._alerts: collections.deque[dict[str, Any]] = collections.deque(maxlen=LATEST_KEPT)
        self._letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=LATEST_KEPT)
        self._letter_kinds: collections.Counter[str] = collections.Counter()
        self._followers: list[TopicFollower] = []
        self._suppressions: SuppressionList | None = None
        self._starting = asyncio.Lock()

    async def collect(self, lookup: str | None) -> DashboardView:
        async with self._starting:  # two first requests start the followers once
            if self._suppressions is None:
                loop = asyncio.get_running_loop()
                self._suppressions = await loop.run_in_executor(None, self._start)
        suppressions = self._suppressions
        with self._lock:
            windows = list(self._windows.values())
            alerts = list(reversed(self._alerts))
            letters = list(reversed(self._letters))
            kinds = dict(self._letter_kinds)
        return DashboardView(
            deliverability=windows,
            thresholds=self._thresholds,
            alerts=alerts,
            suppressions=suppressions.by_reason_and_scope(),
            dead_letters=kinds,
            latest_dead_letters=letters,
            lag=self._lag(),
            lookup=lookup,
            recipient=self._recipient(lookup) if lookup else None,
            generated_at=int(time.time() * 1000),
        )

    def _start(self) -> SuppressionList:
        names = TopicNames(self._settings.topic_prefix)
        decoders = {
            names.deliverability: service_codec(self._settings, "deliverability"),
            names.alerts: service_codec(self._settings, "deliverability_alert"),
            names.dead_letters: service_codec(self._settings, "dead_letter"),
        }

        def keep(topic: str) -> Callable[[bytes | None, bytes | None], None]:
            def on_record(key: bytes | None, value: bytes | None) -> None:
                record = None
                if value is not None:
                    try:
                        record = decoders[topic].decode(value)
                    except MailstreamError:
                        return  # a newer schema than this worker's: shown once upgraded
                with self._lock:
                    if topic == names.deliverability and key is not None:
                        if record is None:
                            self._windows.pop(key, None)
                        else:
                            self._windows[key] = record
                    elif topic == names.alerts and record is not None:
                        self._alerts.append(record)
                    elif record is not None:
                        self._letters.append(record)
                        self._letter_kinds[record["error_kind"]] += 1

            return on_record

        self._followers = [
            TopicFollower(self._settings, topic, keep(topic), purpose="dashboard")
            for topic in decoders
        ]
        suppressions = SuppressionList(self._settings)
        waits = [follower.wait_until_caught_up for follower in self._followers]
        for wait in [*waits, suppressions.wait_until_caught_up]:
            # a long topic is still being read: the page shows what has been read so far
            with contextlib.suppress(TimeoutError):
                wait(CATCH_UP_SECONDS)
        return suppressions

    def _recipient(self, lookup: str) -> Mapping[str, Any] | None:
        """As `/recipients/{email}/` answers (from this worker's partitions), with the
        recipient's recent events; None for no state, or for no address at all."""
        try:
            address = normalize_address(lookup)
        except CommandError:
            return None
        if self._erased.is_erased(address):
            return ERASED_ANSWER
        key = address.encode()
        stored = None if is_bucket_key(key) else self._recipients.get(key)
        if stored is None:
            return None
        timeline = Timeline.from_record(stored)
        events = [entry for entry in timeline.log if "command" not in entry]
        return {**rendered(timeline.state), "events": events[::-1]}
