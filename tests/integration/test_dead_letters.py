"""`mailstream dlq list|redrive` with a running worker: a dead letter is shown, redriven after
the fix, processed, recorded in the ledger, and not sent a second time."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from mailstream.cli import main
from mailstream.codec import codec_for
from mailstream.connectors import maileroo
from mailstream.settings import Settings
from mailstream.streams.operations.dead_letters import (
    REDRIVE_COUNT_HEADER,
    REDRIVEN_FROM_HEADER,
)
from mailstream.streams.reader import latest_by_key, read_until
from mailstream.topics import TopicNames
from tests.integration.harness import send_envelopes

pytestmark = pytest.mark.kafka

DEAD_LETTER = codec_for("dead_letter")
STATE = codec_for("recipient_state")
T0 = 1_700_000_000_000


def dlq(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["dlq", *arguments])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def fixed_dead_letter(names: TopicNames) -> bytes:
    """A dead letter as the normalizer writes one, whose payload the pipeline accepts now."""
    payload = orjson.dumps(
        maileroo.sample_payload("delivered", "late@example.com", "late1@x", T0, "late-e1")
    )
    return DEAD_LETTER.encode(
        {
            "source_topic": names.raw("maileroo"),
            "source_partition": 1,
            "source_offset": 12_345,
            "source_timestamp": T0,
            "key": b"<late1@x>",
            "payload": payload,
            "headers": {"x-trace": b"t-1"},
            "error_kind": "unresolved",
            "error_message": "pretend: this provider's format was not supported yet",
            "failed_at": int(time.time() * 1000),
            "provider": "maileroo",
            "redrive_count": 0,
        }
    )


def test_dead_letters_are_listed_redriven_once_and_processed(
    settings: Settings, names: TopicNames, worker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    send_envelopes(settings, [{"provider": "maileroo", "payload": b"{not json \x1b[2J"}])
    read_until(settings, names.dead_letters, lambda records: len(records) >= 1)
    producer = Producer(settings.kafka.librdkafka_config())
    producer.produce(names.dead_letters, key=b"<late1@x>", value=fixed_dead_letter(names))
    assert producer.flush(30) == 0

    status, listing = dlq(capsys, "list", "--since", "10m")
    assert status == 0, listing
    assert "invalid_json" in listing and "unresolved" in listing
    assert f"{names.raw('maileroo')}:1:12345" in listing
    assert "\x1b" not in listing, "payload control characters never reach the terminal"
    assert "2 dead letter(s)" in listing

    assert dlq(capsys, "list", "--kind", "no_such_kind")[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "redrive", "--since", "last tuesday"])
    assert exit_info.value.code == 2

    status, output = dlq(capsys, "redrive", "--kind", "unresolved", "--dry-run")
    assert status == 0 and "would redrive 1 source record(s)" in output, output
    status, output = dlq(capsys, "redrive", "--kind", "unresolved", "--actor", "tester")
    assert status == 0 and "redriven 1 source record(s)" in output, output

    state = read_until(
        settings,
        names.recipient_state,
        lambda records: b"late@example.com" in latest_by_key(records),
    )
    assert STATE.decode(latest_by_key(state)[b"late@example.com"])["delivered"] == 1

    status, output = dlq(capsys, "redrive", "--kind", "unresolved")
    assert status == 0 and "redriven 0 source record(s)" in output and "1 skipped" in output, output
    ledger = latest_by_key(read_until(settings, names.redrives, lambda records: len(records) >= 1))
    (entry,) = [orjson.loads(value) for value in ledger.values() if value is not None]
    assert entry["actor"] == "tester" and entry["dead_letter"].startswith(f"{names.dead_letters}:")

    # The malformed body fails again after a redrive: its new dead letter carries the headers.
    status, output = dlq(capsys, "redrive", "--kind", "invalid_json")
    assert status == 0 and "redriven 1 source record(s)" in output, output
    again = read_until(
        settings,
        names.dead_letters,
        lambda records: any(
            REDRIVE_COUNT_HEADER in DEAD_LETTER.decode(v)["headers"] for _, v in records if v
        ),
    )
    redriven = [
        d
        for d in (DEAD_LETTER.decode(v) for _, v in again if v)
        if REDRIVE_COUNT_HEADER in d["headers"]
    ]
    assert redriven[0]["headers"][REDRIVE_COUNT_HEADER] == b"1"
    assert redriven[0]["headers"][REDRIVEN_FROM_HEADER].startswith(
        names.dead_letters.encode() + b":"
    )
    assert redriven[0]["payload"] == b"{not json \x1b[2J"
