"""Poison and garbage: malformed, truncated, non-UTF-8, empty, wrongly shaped and oversized
records interleaved with good webhooks on the raw topics, and undecodable records on
email.events. Every bad record is on the dead-letter topic with its cause, found by its source
coordinates; every good one is processed (the state equals the offline twin's); the worker
keeps running.

Bad records sit between good ones in the same partitions (most reuse a good message's key), so
a bad record that stopped its partition would hold good ones back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson
import pytest

from mailstream.codec import codec_for
from mailstream.connectors.registry import parse
from mailstream.connectors.samples import Envelope, RawRecord, campaign_rounds, raw_record
from mailstream.settings import Settings
from mailstream.streams.reader import read_to_end, read_until
from mailstream.topics import TopicNames
from tests.integration.harness import Coordinates, produce_in_order
from tests.reliability.helpers import (
    DEAD_LETTER_CODEC,
    Workers,
    expected_states,
    wait_for_oracle,
)

pytestmark = pytest.mark.kafka

RECIPIENTS = 120
# The largest record a topic takes by default is 1 MiB + 12 bytes (message.max.bytes), batch
# overhead included; the ingest accepts webhook bodies up to 1 MiB.
OVERSIZED_BYTES = 1_000_000
PAYLOAD_KEPT_WHOLE_UP_TO = 100_000  # a dead letter may cut a larger payload, keeping its start


@dataclass(frozen=True)
class Poison:
    record: RawRecord
    cause: str  # the error_kind its dead letter must carry


def poison_records(
    names: TopicNames, envelopes: list[Envelope], good: list[RawRecord], rng: random.Random
) -> list[Poison]:
    maileroo, mailbot, inboxroad = (names.raw(p) for p in ("maileroo", "mailbot", "inboxroad"))
    sample = rng.choice([r for r in good if r.value and len(r.value) > 40])
    keyed = rng.choice(good).key  # the same partition as a good message's records
    envelope = rng.choice(envelopes)
    [event] = parse(envelope["provider"], orjson.dumps(envelope["payload"]))
    event_bytes = codec_for("email_event").encode(event)
    return [
        Poison(RawRecord(maileroo, keyed, b"{not json"), "invalid_json"),
        Poison(
            RawRecord(sample.topic, sample.key, sample.value[: len(sample.value) // 2]),
            "invalid_json",
        ),
        Poison(
            RawRecord(
                mailbot, keyed, b'{"event_type": "message.delivered", "recipient": "\xff\xfe@x"}'
            ),
            "not_utf8",
        ),
        Poison(RawRecord(inboxroad, keyed, b""), "invalid_json"),
        Poison(RawRecord(inboxroad, None, None), "invalid_json"),
        Poison(RawRecord(maileroo, keyed, b"[1, 2, 3]"), "wrong_type"),
        Poison(RawRecord(mailbot, keyed, orjson.dumps({"hello": "world"})), "missing_field"),
        Poison(RawRecord(maileroo, keyed, b"x" * OVERSIZED_BYTES), "invalid_json"),
        Poison(RawRecord(names.events, b"garbage@example.com", b"not avro at all"), "bad_magic"),
        Poison(RawRecord(names.events, b"cut@example.com", event_bytes[:20]), "corrupt_body"),
        Poison(
            RawRecord(
                names.events, b"unknown@example.com", b"\xc3\x01" + bytes(8) + event_bytes[10:]
            ),
            "unknown_schema",
        ),
    ]


def interleave(
    good: list[RawRecord], bad: list[Poison], rng: random.Random
) -> list[RawRecord | Poison]:
    stream: list[RawRecord | Poison] = list(good)
    for poison in bad:
        stream.insert(rng.randrange(len(stream) + 1), poison)
    return stream


def test_every_bad_record_is_dead_lettered_with_its_cause_and_every_good_one_is_processed(
    settings: Settings, names: TopicNames, workers: Workers, chaos_seed: int
) -> None:
    rng = random.Random(chaos_seed)
    [envelopes] = campaign_rounds(RECIPIENTS, rounds=1, seed=chaos_seed)
    good = [raw_record(names, envelope) for envelope in envelopes]
    stream = interleave(good, poison_records(names, envelopes, good, rng), rng)
    records = [item.record if isinstance(item, Poison) else item for item in stream]
    workers.start("worker", settings)
    coordinates = produce_in_order(settings, records)
    expected_causes = {
        where: item.cause
        for where, item in zip(coordinates, stream, strict=True)
        if isinstance(item, Poison)
    }
    sent = {where: record.value for where, record in zip(coordinates, records, strict=True)}

    wait_for_oracle(
        settings, expected_states(envelopes), 90, f"chaos seed {chaos_seed}", workers.log_tails
    )
    dead = dead_letters(settings, names, len(expected_causes))
    missing = {
        where: (cause, len(sent[where] or b""))
        for where, cause in expected_causes.items()
        if where not in dead
    }
    assert not missing, f"not dead-lettered (cause, bytes): {missing}\n{workers.log_tails()}"
    assert {where: letter["error_kind"] for where, letter in dead.items()} == expected_causes
    for where, letter in dead.items():
        assert letter["error_message"], where
        original = sent[where] or b""
        if len(original) <= PAYLOAD_KEPT_WHOLE_UP_TO:
            assert letter["payload"] == original, where
        else:
            assert letter["payload"] and original.startswith(letter["payload"]), where
    workers.assert_alive("worker")


def dead_letters(settings: Settings, names: TopicNames, count: int) -> dict[Coordinates, dict]:
    """The dead letters by the coordinates of the record each stands for (a redelivery after a
    crash may write one twice: the same coordinates)."""
    try:
        records = read_until(settings, names.dead_letters, lambda found: len(found) >= count, 60)
    except TimeoutError:
        records = [
            (record.key, record.value) for record in read_to_end(settings, names.dead_letters)
        ]
    letters = [DEAD_LETTER_CODEC.decode(value) for _, value in records if value is not None]
    return {
        (letter["source_topic"], letter["source_partition"], letter["source_offset"]): letter
        for letter in letters
    }
