"""The set of erased addresses (`mailstream erase`), as keyed hashes, kept current from
email.erasures: the worker drops every record of an erased address, and the downstream
suppression list answers "suppressed" for one.

Importable without Faust.
"""

from __future__ import annotations

from mailstream.codec import AvroCodec, service_codec
from mailstream.erasure import (
    ERASURE_KEY_VARIABLE,
    ErasureKeyMismatch,
    ErasureKeyMissing,
    address_hash,
    key_id,
)
from mailstream.errors import MailstreamError
from mailstream.settings import Settings
from mailstream.streams.follower import TopicFollower
from mailstream.streams.reader import iterate_to_end
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
        self._foreign_key_ids: set[str] = set()
        self._codec: AvroCodec | None = None

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
        None without a key, when there is nothing to compare the hashes with. Without a key
        while the topic holds erasures, ErasureKeyMissing: whoever runs without it would
        take erased people for never erased (their suppressions are tombstoned)."""
        topic = TopicNames(settings.topic_prefix).erasures
        if self.key is None:
            if next(iterate_to_end(settings, topic), None) is not None:
                raise ErasureKeyMissing(
                    f"{topic} holds erasures and {ERASURE_KEY_VARIABLE} is not set: erased "
                    "addresses would read as never erased; set the deployment's erasure key"
                )
            return None
        self._codec = service_codec(settings, "erasure")
        return TopicFollower(settings, topic, self._store, purpose="erasures")

    def check_key(self) -> None:
        """ErasureKeyMismatch when an erasure read so far was hashed with another key."""
        if self._foreign_key_ids and self.key is not None:
            theirs = ", ".join(sorted(self._foreign_key_ids))
            raise ErasureKeyMismatch(
                f"erasures hashed with another key (key id {theirs}, ours {key_id(self.key)}): "
                f"{ERASURE_KEY_VARIABLE} must be the key that erased them, or those addresses "
                "would read as never erased"
            )

    def load(
        self, settings: Settings, timeout: float = LOAD_TIMEOUT_SECONDS
    ) -> TopicFollower | None:
        """`follow`, caught up to the end of email.erasures, and the key checked."""
        follower = self.follow(settings)
        if follower is not None:
            try:
                follower.wait_until_caught_up(timeout)
                self.check_key()
            except BaseException:
                follower.close()
                raise
        return follower

    def _store(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        hashed = key.decode(errors="replace")
        if value is None:
            self._hashes.discard(hashed)
            return
        self._hashes.add(hashed)
        try:
            written_by = self._codec.decode(value)["key_id"] if self._codec else None
        except MailstreamError:
            written_by = None  # a newer schema: its hash is kept all the same
        if written_by is not None and self.key is not None and written_by != key_id(self.key):
            self._foreign_key_ids.add(written_by)
