"""A local, always-current copy of `email.suppressions.scoped` (and of `email.erasures`, as
hashes) for services that send mail."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

import orjson

from mailstream.addresses import canonical_address
from mailstream.settings import KafkaSettings, Settings
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.follower import TopicFollower
from mailstream.topics import TopicNames

UNREADABLE_REASON = "UNKNOWN"
ERASED_REASON = "ERASED"


class SuppressionList:
    """Follows the compacted scoped-suppressions topic and answers "may I mail this address?"
    (for a tenant: is it suppressed globally or for that tenant?).

    Reads every partition from the beginning in a background thread (assigned, no consumer
    group, nothing committed), keeps the latest record per recipient and scope in memory (a
    tombstone removes it: an operator lifted the suppression) and keeps following, so a new
    suppression is known within a poll. Reads are thread-safe. A record it cannot decode (a
    newer schema) still counts as suppressed, with reason UNKNOWN: not mailing is the safe side.
    With the
    deployment's erasure key in the settings it also follows email.erasures: an erased address
    (`mailstream erase`) is suppressed with reason ERASED, and only its keyed hash is held.

        from mailstream.streams.suppression_list import SuppressionList

        suppressions = SuppressionList(Settings.from_env())   # or SuppressionList("kafka:9092")
        suppressions.wait_until_caught_up(timeout=30)          # before the first send
        for message in outbox:
            if suppressions.is_suppressed(message.to, tenant="newsletters"):
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
        `email.suppressions.scoped` (the unscoped `email.suppressions` reads as global)."""
        from mailstream.codec import service_codec

        settings = (
            source
            if isinstance(source, Settings)
            else Settings(kafka=KafkaSettings(bootstrap_servers=source))
        )
        self.topic = topic or TopicNames(settings.topic_prefix).scoped_suppressions
        if registry_url is not None:
            registry = replace(settings.schema_registry, url=registry_url)
            settings = replace(settings, schema_registry=registry)
        self._codec = service_codec(settings, "suppression")
        self._entries: dict[str, dict[str | None, dict[str, Any]]] = {}
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

    def is_suppressed(self, email: str, tenant: str | None = None) -> bool:
        """Whether `tenant` must not mail `email`: erased, or suppressed globally or for that
        tenant. Without a tenant: suppressed in any scope (what a sender that knows no
        tenants must honour)."""
        return self.reason(email, tenant) is not None

    def reason(self, email: str, tenant: str | None = None) -> str | None:
        """SuppressionReason symbol (HARD_BOUNCE, COMPLAINT, MANUAL, ...) of the suppression
        that holds for `tenant` (the global one first), ERASED for an erased address; None if
        mailable."""
        if self._erased.is_erased(email):
            return ERASED_REASON
        with self._lock:
            scopes = self._entries.get(canonical_address(email))
            entry = _holding(scopes, tenant) if scopes else None
        return None if entry is None else str(entry["reason"])

    def by_reason_and_scope(self) -> dict[tuple[str, str], int]:
        """(reason, "global" or "tenant <id>") -> suppressed recipients."""
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for scopes in self._entries.values():
                for tenant, entry in scopes.items():
                    scope = "global" if tenant is None else f"tenant {tenant}"
                    key = (str(entry.get("reason", UNREADABLE_REASON)), scope)
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def __len__(self) -> int:
        """The number of addresses suppressed in some scope."""
        with self._lock:
            return len(self._entries)

    def wait_until_caught_up(self, timeout: float) -> None:
        """Return once the topics' end offsets as of the start are read (the suppressions,
        and email.erasures with an erasure key); TimeoutError otherwise, or the error that
        stopped a reader; ErasureKeyMismatch when the erasures were hashed with another key.
        Constructed without a key while email.erasures holds erasures, it refuses at once
        (ErasureKeyMissing): it could not know the erased addresses."""
        deadline = time.monotonic() + timeout
        for follower in self._followers:
            follower.wait_until_caught_up(max(0.0, deadline - time.monotonic()))
        self._erased.check_key()

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
        recipient, tenant = _scope_of_key(key)
        entry = None if value is None else self._decode(value)
        with self._lock:
            scopes = self._entries.get(recipient)
            if entry is not None:
                if scopes is None:
                    scopes = self._entries[recipient] = {}
                scopes[tenant] = entry
            elif scopes is not None:
                scopes.pop(tenant, None)
                if not scopes:
                    del self._entries[recipient]

    def _decode(self, value: bytes) -> dict[str, Any]:
        from mailstream.errors import MailstreamError

        try:
            return self._codec.decode(value)
        except MailstreamError:
            return {"reason": UNREADABLE_REASON}


def _scope_of_key(key: bytes) -> tuple[str, str | None]:
    """(recipient, tenant) of a key of `email.suppressions.scoped` (the JSON array
    [recipient, tenant]); a bare address (`email.suppressions`) is a global key."""
    if key.startswith(b'["'):
        try:
            recipient, tenant = orjson.loads(key)
            if isinstance(recipient, str) and (tenant is None or isinstance(tenant, str)):
                return canonical_address(recipient), tenant
        except (orjson.JSONDecodeError, ValueError, TypeError):
            pass
    return canonical_address(key.decode(errors="replace")), None


def _holding(
    scopes: Mapping[str | None, dict[str, Any]], tenant: str | None
) -> dict[str, Any] | None:
    """The suppression that holds for `tenant` among one address's scopes: the global one,
    else the tenant's own (any tenant's, the earliest, when `tenant` is None)."""
    if None in scopes:
        return scopes[None]
    if tenant is not None:
        return scopes.get(tenant)
    return min(scopes.values(), key=lambda entry: entry.get("since") or 0, default=None)
