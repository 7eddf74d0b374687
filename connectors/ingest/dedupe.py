"""The webhooks the ingest stored lately, so that a replayed or retried one is answered 200
without a second write.

Maileroo's and Inboxroad's signatures carry no timestamp: a captured request verifies forever.
A body is remembered by provider and sha256 for `window_seconds` after Kafka acknowledged it,
at most `max_entries` of them (the oldest go first). Entries are kept in the order they were
stored, which is also the order they expire, so expiry and eviction pop from the front.

Memory: about 400 bytes per entry (measured with tracemalloc: the key tuple with its 32-byte
digest, the request id, the expiry time and the ordered dict's own node), so ~40 MB for the
default 100,000 entries. The window is per process: ingest replicas behind a load balancer
each keep their own, and downstream the normalizer still deduplicates on event ids.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

WebhookDigest = tuple[str, bytes]  # (provider, sha256 of the body)


def webhook_digest(provider: str, body: bytes) -> WebhookDigest:
    return provider, hashlib.sha256(body).digest()


class RecentWebhooks:
    """Request ids of bodies stored within the window; `window_seconds=0` remembers nothing."""

    def __init__(
        self,
        window_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._stored: OrderedDict[WebhookDigest, tuple[float, str]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.window_seconds > 0

    def __len__(self) -> int:
        return len(self._stored)

    def first_request_id(self, digest: WebhookDigest) -> str | None:
        """The request id under which this body was stored within the window, else None."""
        self._expire()
        entry = self._stored.get(digest)
        return entry[1] if entry is not None else None

    def remember(self, digest: WebhookDigest, request_id: str) -> None:
        """Call only once Kafka acknowledged the write: a failed write must stay retryable."""
        if not self.enabled:
            return
        self._expire()
        self._stored[digest] = (self._clock() + self.window_seconds, request_id)
        self._stored.move_to_end(digest)
        while len(self._stored) > self.max_entries:
            self._stored.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        while self._stored:
            digest, (expires_at, _) = next(iter(self._stored.items()))
            if expires_at > now:
                return
            del self._stored[digest]
