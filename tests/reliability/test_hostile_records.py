"""Hostile records on every input topic of a real worker, and outputs the broker refuses.

- A signed batch of 10,000 events no recipient can be found for costs one dead letter, and the
  worker's memory stays bounded (it used to write 10,000 copies of the body).
- Records with garbage headers (a redrive count of "abc", a receive time of thirty nines, binary
  names and values) on the raw topics, email.events and email.commands are processed or
  dead-lettered, never dropped; commands that do not belong (not a canonical address, keyed or
  partitioned elsewhere, requested in the far future) are dead-lettered.
- An output the broker refuses stops the worker before it commits past the input; once the
  cause is fixed, a restarted worker publishes everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import random
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from mailstream.codec import codec_for
from mailstream.commands import CommandAction, OperatorCommand
from mailstream.connectors import mailbot
from mailstream.connectors.registry import PROVIDERS, parse
from mailstream.connectors.samples import Envelope, campaign_rounds, raw_record
from mailstream.dev.broker import free_port
from mailstream.settings import IngestSettings, ProviderAuth, Settings
from mailstream.streams.operations.processes import service, settings_env
from mailstream.streams.reader import read_to_end
from mailstream.streams.records import REDRIVE_COUNT_HEADER, partition_of
from mailstream.topics import (
    TopicNames,
    committed_offsets,
    list_offsets,
    partitions_of,
)
from tests.integration.harness import produce_in_order
from tests.reliability.helpers import (
    DEAD_LETTER_CODEC,
    STATE_CODEC,
    Workers,
    expected_states,
    published_states,
    wait_for_oracle,
)

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
BATCH = 10_000
PEAK_RSS_LIMIT_MIB = 600  # a worker with these tables peaks near 200 MiB
COMMAND_CODEC = codec_for("operator_command")
EVENT_CODEC = codec_for("email_event")
Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Hostile:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    recipient: str | None = None  # whose state shows it was processed, if it may be
    must_dead_letter: bool = False
    coordinates: list[tuple[str, int, int]] = field(default_factory=list)


def garbage_headers(rng: random.Random) -> Headers:
    headers: list[tuple[str, bytes | None]] = [
        (REDRIVE_COUNT_HEADER, rng.choice([b"abc", b"-3", b"9" * 30, b""])),
        ("mailstream.received_at", rng.choice([b"9" * 30, b"9" * 18, b"soon", None])),
    ]
    for _ in range(rng.randrange(6)):
        name = "".join(rng.choice("abcé\u2603-_.") for _ in range(rng.randrange(1, 30)))
        headers.append((name, rng.choice([None, rng.randbytes(rng.randrange(200))])))
    rng.shuffle(headers)
    return tuple(headers)


def hostile_records(names: TopicNames, settings: Settings, rng: random.Random) -> list[Hostile]:
    batch = orjson.dumps(
        [
            {"event_type": "message.opened", "created_at": 1_700_000_000, "event_id": f"u{n}"}
            for n in range(BATCH)
        ]
    )
    records = [Hostile(names.raw("mailbot"), b"batch", batch, must_dead_letter=True)]
    for n in range(12):
        recipient = f"raw-{n}@example.com"
        payload = mailbot.sample_payload("message.delivered", recipient, f"r{n}@x", T0, f"r{n}")
        body = orjson.dumps(payload)
        records.append(
            Hostile(
                names.raw("mailbot"),
                f"r{n}@x".encode(),
                body,
                garbage_headers(rng),
                None,
                recipient,
            )
        )
        event_recipient = f"event-{n}@example.com"
        [event] = parse("mailbot", orjson.dumps(dict(payload, recipient=event_recipient)))
        records.append(
            Hostile(
                names.events,
                event_recipient.encode(),
                EVENT_CODEC.encode(event),
                garbage_headers(rng),
                None,
                event_recipient,
            )
        )
        command_recipient = f"command-{n}@example.com"
        key = command_recipient.encode()
        command = OperatorCommand(
            CommandAction.SUPPRESS,
            command_recipient,
            "test",
            int(time.time() * 1000),
            command_id=f"c{n}",
        )
        records.append(
            Hostile(
                names.commands,
                key,
                COMMAND_CODEC.encode(command.to_record()),
                garbage_headers(rng),
                partition_of(key, settings.partitions),
                command_recipient,
            )
        )
    now = int(time.time() * 1000)
    misplaced = b"misplaced@example.com"
    for recipient, key, partition, requested_at in [
        ("", b"", 0, now),
        ("Not@Canonical.com", b"Not@Canonical.com", None, now),
        ("far@example.com", b"far@example.com", None, 2**62),
        ("misplaced@example.com", b"other@example.com", None, now),
        (
            "misplaced@example.com",
            misplaced,
            (partition_of(misplaced, settings.partitions) + 1) % settings.partitions,
            now,
        ),
    ]:
        command = OperatorCommand(CommandAction.SUPPRESS, recipient, "x", requested_at)
        if partition is None:
            partition = partition_of(key, settings.partitions) if key else 0
        records.append(
            Hostile(
                names.commands,
                key,
                COMMAND_CODEC.encode(command.to_record()),
                (),
                partition,
                must_dead_letter=True,
            )
        )
    return records


def produce(settings: Settings, records: Sequence[Hostile]) -> None:
    producer = Producer(
        {
            **settings.kafka.librdkafka_config(),
            "enable.idempotence": True,
            "message.max.bytes": 2**21,
        }
    )

    def delivered(record: Hostile) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            assert error is None, f"not delivered: {error}"
            record.coordinates.append(
                (message.topic() or "", message.partition() or 0, message.offset() or 0)
            )

        return report

    for record in records:
        extra = {} if record.partition is None else {"partition": record.partition}
        producer.produce(
            record.topic,
            record.value,
            record.key,
            headers=list(record.headers),
            on_delivery=delivered(record),
            **extra,
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def wait_until_committed(
    settings: Settings, names: TopicNames, timeout: float, check: Callable[[], None]
) -> None:
    admin = AdminClient(settings.kafka.librdkafka_config())
    topics = [names.raw(p) for p in ("mailbot", "maileroo", "inboxroad")]
    partitions = partitions_of(admin, [*topics, names.events, names.commands])
    deadline = time.monotonic() + timeout
    while True:
        ends = list_offsets(admin, partitions)
        committed = committed_offsets(admin, settings.app_id)
        behind = {
            p: (committed.get(p), end) for p, end in ends.items() if committed.get(p, 0) < end
        }
        if not behind:
            return
        check()
        assert time.monotonic() < deadline, f"not committed (committed, end): {behind}"
        time.sleep(0.2)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_records_on_every_input_are_processed_or_dead_lettered_once(
    settings: Settings, names: TopicNames, workers: Workers, chaos_seed: int
) -> None:
    rng = random.Random(chaos_seed)
    [envelopes] = campaign_rounds(20, rounds=1, seed=chaos_seed)
    records = hostile_records(names, settings, rng)
    worker = workers.start("worker", settings)
    produce_in_order(settings, [raw_record(names, envelope) for envelope in envelopes])
    produce(settings, records)

    def alive() -> None:
        workers.assert_alive("worker")

    wait_until_committed(settings, names, 120, alive)
    letters: dict[tuple[str, int, int], list[dict]] = {}
    for record in read_to_end(settings, names.dead_letters):
        letter = DEAD_LETTER_CODEC.decode(record.value or b"")
        source = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        letters.setdefault(source, []).append(letter)
    states = {
        (record.key or b"").decode(): STATE_CODEC.decode(record.value)
        for record in read_to_end(settings, names.recipient_state)
        if record.value is not None
    }
    for record in records:
        (where,) = record.coordinates
        found = letters.get(where, [])
        assert len(found) <= 1, f"{where}: {len(found)} dead letters"
        if record.must_dead_letter:
            assert found, f"{where} was not dead-lettered"
        else:
            assert record.recipient in states or found, f"{where} was dropped"
    assert all(
        record.recipient in states
        for record in records
        if record.topic == names.commands and record.recipient
    ), "a valid command with odd headers was not applied"
    [batch] = records[:1]
    [letter] = letters[batch.coordinates[0]]
    assert letter["error_kind"] == "unresolved"
    assert f"{BATCH} of {BATCH} events unresolved" in letter["error_message"]
    expected = expected_states(envelopes)  # the good records among them: processed as ever
    published = published_states(
        [(record.key, record.value) for record in read_to_end(settings, names.recipient_state)]
    )
    assert {key: published.get(key) for key in expected} == expected, f"seed {chaos_seed}"
    alive()
    assert peak_rss_mib(worker.pid) < PEAK_RSS_LIMIT_MIB
    log = workers.log("worker").read_text(errors="replace")
    assert "Traceback" not in log
    assert "Crashed reason=" not in log, "an agent was restarted (mode logs its crash so)"


def set_max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    admin = AdminClient(settings.kafka.librdkafka_config())
    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def test_an_output_the_broker_refuses_stops_the_worker_before_its_input_is_committed(
    settings: Settings, names: TopicNames, workers: Workers, chaos_seed: int
) -> None:
    [envelopes] = campaign_rounds(15, rounds=1, seed=chaos_seed)
    set_max_message_bytes(settings, names.recipient_state, 64)  # every state record is larger
    worker = workers.start("refused", settings)
    produce_in_order(settings, [raw_record(names, envelope) for envelope in envelopes])
    deadline = time.monotonic() + 120
    while worker.poll() is None:
        assert time.monotonic() < deadline, f"the worker kept going:\n{workers.log_tail('refused')}"
        time.sleep(0.2)
    log = workers.log("refused").read_text(errors="replace")
    assert f"an output to {names.recipient_state} was not stored" in log
    admin = AdminClient(settings.kafka.librdkafka_config())
    committed = committed_offsets(admin, settings.app_id)
    events_committed = {p: o for p, o in committed.items() if p[0] == names.events and o > 0}
    assert not events_committed, f"inputs committed past lost outputs: {events_committed}"

    set_max_message_bytes(settings, names.recipient_state, 1_048_588)
    workers.start("fixed", settings)
    wait_for_oracle(
        settings, expected_states(envelopes), 120, f"chaos seed {chaos_seed}", workers.log_tails
    )
    wait_until_committed(settings, names, 60, lambda: workers.assert_alive("fixed"))


SECRET = "hostile-secret"


def with_secrets(settings: Settings) -> Settings:
    auth = ProviderAuth(secrets=(SECRET,))
    return dataclasses.replace(
        settings,
        ingest=IngestSettings(providers=dict.fromkeys(PROVIDERS, auth), read_timeout_seconds=2.0),
    )


async def post(
    session: aiohttp.ClientSession,
    base: str,
    provider: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    signed: bool = True,
) -> tuple[int, dict]:
    settings_auth = ProviderAuth(secrets=(SECRET,))
    signature = PROVIDERS[provider].sign(body, settings_auth, time.time()) if signed else {}
    async with session.post(
        f"{base}/webhooks/{provider}",
        data=io.BytesIO(body),
        headers={"Content-Type": "application/json", **signature, **(headers or {})},
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def slow_client(port: int) -> bool:
    """Headers that never finish: True when the ingest closes the connection itself."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /webhooks/mailbot HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=20) is not None
    finally:
        writer.close()


async def hostile_mix(base: str, port: int, envelopes: list[Envelope]) -> dict[bytes, int]:
    """Every body answered 2xx, with how many times; the hostile requests checked on the way."""
    stored: dict[bytes, int] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        bodies = [(e["provider"], orjson.dumps(e["payload"])) for e in envelopes]
        batch = orjson.dumps(
            [
                {"event_type": "message.opened", "created_at": 1_700_000_000, "event_id": f"u{n}"}
                for n in range(BATCH)
            ]
        )
        bodies += [("mailbot", batch), ("maileroo", b"{not json")]
        for provider, body in bodies + bodies[:10]:  # the first ten again: replays
            status, answer = await post(session, base, provider, body)
            assert status == 200, answer
            if answer["status"] == "stored":
                stored[body] = stored.get(body, 0) + 1
        checks = [
            (await post(session, base, "maileroo", b"x" * (1024 * 1024 + 1)))[0] == 413,
            (await post(session, base, "mailbot", b"{}", {"X-Mailbot-Timestamp": "9" * 400}))[0]
            == 401,
            (await post(session, base, "maileroo", b"{}", signed=False))[0] == 401,
            (
                await post(
                    session, base, "maileroo", b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}
                )
            )[0]
            == 400,
            await slow_client(port),
        ]
        assert all(checks), checks
    return stored


def test_a_hostile_mix_through_the_real_ingest_is_stored_once_and_processed_or_dead_lettered(
    settings: Settings, names: TopicNames, workers: Workers, tmp_path: Path, chaos_seed: int
) -> None:
    configured = with_secrets(settings)
    [envelopes] = campaign_rounds(20, rounds=1, seed=chaos_seed)
    port = free_port()
    env = settings_env(configured)
    for provider in PROVIDERS:
        env[f"MAILSTREAM_INGEST_{provider.upper()}_SECRETS"] = SECRET
    env["MAILSTREAM_INGEST_READ_TIMEOUT_SECONDS"] = "2"
    worker = workers.start("worker", settings)
    with service(["ingest", "--port", str(port)], env, tmp_path / "ingest.log"):
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base)
        stored = asyncio.run(hostile_mix(base, port, envelopes))
    raw = [
        record for provider in PROVIDERS for record in read_to_end(settings, names.raw(provider))
    ]
    on_topics: dict[bytes, int] = {}
    for record in raw:
        on_topics[record.value or b""] = on_topics.get(record.value or b"", 0) + 1
    assert on_topics == stored, "a 2xx body missing, or stored twice"
    wait_until_committed(settings, names, 120, lambda: workers.assert_alive("worker"))
    letters: dict[tuple[str, int, int], int] = {}
    for record in read_to_end(settings, names.dead_letters):
        letter = DEAD_LETTER_CODEC.decode(record.value or b"")
        source = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        letters[source] = letters.get(source, 0) + 1
    assert all(count == 1 for count in letters.values()), letters
    assert len(letters) == 2  # the unresolvable batch and the body that is not JSON
    expected = expected_states(envelopes)
    published = published_states(
        [(record.key, record.value) for record in read_to_end(settings, names.recipient_state)]
    )
    assert published == expected, f"seed {chaos_seed}"
    workers.assert_alive("worker")
    assert peak_rss_mib(worker.pid) < PEAK_RSS_LIMIT_MIB
    log = workers.log("worker").read_text(errors="replace")
    assert "Traceback" not in log
    assert "Crashed reason=" not in log, "an agent was restarted (mode logs its crash so)"


def wait_until_ready(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or not ready
        assert time.monotonic() < deadline, "the ingest was not ready"
        time.sleep(0.1)
