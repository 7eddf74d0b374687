"""The set of erased addresses (`mailstream erase`), as keyed hashes, kept current from
email.erasures: the worker drops every record of an erased address, and the downstream
suppression list answers "suppressed" for one.

Importable without Faust.
"""

from __future__ import annotations

from mailstream.erasure import address_hash
from mailstream.settings import Settings
from mailstream.streams.follower import TopicFollower
from mailstream.topics import TopicNames

LOAD_TIMEOUT_SECONDS = 60.0


class ErasedAddresses:
    """The hashes of erased addresses under `key` (the deployment's erasure key); empty
    without a key. `is_erased` hashes an address only when the set is not empty, so the hot
    path pays no HMAC while nobody is erased. Updated from one thread (a follower or the
    state agent) and read from others: single set operations are atomic in CPython."""

    def __init__(self, key: str | None) -> None:
        self.key = key or None
        self._hashes: set[str] = set()

    def is_erased(self, address: str) -> bool:
        if not self._hashes or self.key is None:
            return False
        return address_hash(address, self.key) in self._hashes

    def add(self, hashed: str) -> None:
        self._hashes.add(hashed)

    def __len__(self) -> int:
        return len(self._hashes)

    def follow(self, settings: Settings) -> TopicFollower | None:
        """Start following email.erasures into this set (a tombstone removes its hash);
        None without a key, when there is nothing to compare the hashes with."""
        if self.key is None:
            return None
        return TopicFollower(
            settings, TopicNames(settings.topic_prefix).erasures, self._store, purpose="erasures"
        )

    def _store(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        hashed = key.decode(errors="replace")
        if value is None:
            self._hashes.discard(hashed)
        else:
            self._hashes.add(hashed)
