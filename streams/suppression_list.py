"""A local, always-current copy of `email.suppressions` (and of `email.erasures`, as hashes)
for services that send mail."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import TracebackType
from typing import Any

from mailstream.addresses import canonical_address
from mailstream.settings import KafkaSettings, Settings
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.follower import TopicFollower
from mailstream.topics import TopicNames

UNREADABLE_REASON = "UNKNOWN"
ERASED_REASON = "ERASED"


class SuppressionList:
    """Follows the compacted suppressions topic and answers "may I mail this address?".

    Reads every partition from the beginning in a background thread (assigned, no consumer
    group, nothing committed), keeps the latest record per recipient in memory (a tombstone
    removes it: an operator lifted the suppression) and keeps following, so a new suppression
    is known within a poll. Reads are thread-safe. A record it cannot decode (a newer schema)
    still counts as suppressed, with reason UNKNOWN: not mailing is the safe side. With the
    deployment's erasure key in the settings it also follows email.erasures: an erased address
    (`mailstream erase`) is suppressed with reason ERASED, and only its keyed hash is held.

        from mailstream.streams.suppression_list import SuppressionList

        suppressions = SuppressionList(Settings.from_env())   # or SuppressionList("kafka:9092")
        suppressions.wait_until_caught_up(timeout=30)          # before the first send
        for message in outbox:
            if suppressions.is_suppressed(message.to):
                log.info("not sending to %s: %s", message.to, suppressions.reason(message.to))
                continue
            send(message)
        suppressions.close()                                   # or use it as a context manager
    """

    def __init__(
        self,
        source: Settings | str,
        topic: str | None = None,
        *,
        registry_url: str | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        """`source`: the project's Settings (topic prefix, security, registry, erasure key
        included) or a bootstrap address for a PLAINTEXT cluster; `topic` overrides
        `email.suppressions`."""
        from mailstream.codec import service_codec

        settings = (
            source
            if isinstance(source, Settings)
            else Settings(kafka=KafkaSettings(bootstrap_servers=source))
        )
        self.topic = topic or TopicNames(settings.topic_prefix).suppressions
        if registry_url is not None:
            registry = replace(settings.schema_registry, url=registry_url)
            settings = replace(settings, schema_registry=registry)
        self._codec = service_codec(settings, "suppression")
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._erased = ErasedAddresses(settings.erasure_key)
        self._followers = [
            TopicFollower(
                settings,
                self.topic,
                self._store,
                purpose="suppression-list",
                poll_seconds=poll_seconds,
            )
        ]
        try:
            erasures = self._erased.follow(settings)
        except BaseException:
            self.close()
            raise
        if erasures is not None:
            self._followers.append(erasures)

    def is_suppressed(self, email: str) -> bool:
        if self._erased.is_erased(email):
            return True
        with self._lock:
            return canonical_address(email) in self._entries

    def reason(self, email: str) -> str | None:
        """SuppressionReason symbol (HARD_BOUNCE, COMPLAINT, MANUAL, ...), ERASED for an erased
        address; None if mailable."""
        if self._erased.is_erased(email):
            return ERASED_REASON
        with self._lock:
            entry = self._entries.get(canonical_address(email))
        return None if entry is None else str(entry["reason"])

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def wait_until_caught_up(self, timeout: float) -> None:
        """Return once the topics' end offsets as of the start are read (email.suppressions,
        and email.erasures with an erasure key); TimeoutError otherwise, or the error that
        stopped a reader."""
        deadline = time.monotonic() + timeout
        for follower in self._followers:
            follower.wait_until_caught_up(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for follower in self._followers:
            follower.close()

    def __enter__(self) -> SuppressionList:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _store(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        recipient = canonical_address(key.decode(errors="replace"))
        entry = None if value is None else self._decode(value)
        with self._lock:
            if entry is None:
                self._entries.pop(recipient, None)
            else:
                self._entries[recipient] = entry

    def _decode(self, value: bytes) -> dict[str, Any]:
        from mailstream.errors import MailstreamError

        try:
            return self._codec.decode(value)
        except MailstreamError:
            return {"reason": UNREADABLE_REASON}
