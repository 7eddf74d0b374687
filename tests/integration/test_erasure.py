"""Erasure on the real broker: `mailstream erase` forgets one of two recipients (the suppressed
one) for good: its published keys end as tombstones, the erasures topic and the message table
hold no trace of its address, the suppression list and the query API still say "do not mail",
later webhooks of it produce nothing (a restarted worker's too), and a full replay does not
bring it back."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailstream.cli import main
from mailstream.connectors import inboxroad, maileroo
from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.broker import free_port
from mailstream.erasure import ErasureKeyMismatch, ErasureKeyMissing, address_hash
from mailstream.settings import Settings
from mailstream.streams.operations.processes import settings_env
from mailstream.streams.reader import latest_by_key, read_to_end
from mailstream.streams.suppression_list import SuppressionList
from mailstream.topics import TopicNames, changelog_topics, create_topics, topic_specs
from tests.integration.harness import running_worker, send_envelopes
from tests.integration.test_operations import TOKEN, get, wait_for_states, wait_for_web
from tests.integration.test_replay import replay
from tests.reliability.helpers import wait_for_commits

pytestmark = pytest.mark.kafka

KEY = "integration-erasure-key"
ANN = "ann@example.com"  # suppressed (a complaint), then erased
BOB = "bob@example.com"  # untouched
DAY = 86_400_000


@pytest.fixture
def erasing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings with an erasure key and a token, in the environment too (for the
    in-process `mailstream erase` and `mailstream replay`)."""
    erasing = dataclasses.replace(settings, erasure_key=KEY, web_token=TOKEN)
    create_topics(erasing, topic_specs(erasing, PROVIDERS))
    for name, value in settings_env(erasing).items():
        if name.startswith("MAILSTREAM_"):
            monkeypatch.setenv(name, value)
    return erasing


def latest(settings: Settings, topic: str) -> dict[bytes, bytes | None]:
    return latest_by_key((record.key, record.value) for record in read_to_end(settings, topic))


def no_trace_of(address: str, settings: Settings, topic: str) -> bool:
    """No record of `topic` holds the address's bytes, in its key or its value."""
    needle = address.encode()
    return not any(
        needle in (record.key or b"") or needle in (record.value or b"")
        for record in read_to_end(settings, topic)
    )


def message_entries_naming(address: str, settings: Settings) -> set[bytes]:
    """The keys of the message table (its changelog's latest values) naming `address`."""
    changelog = changelog_topics(settings.app_id)[0]
    return {
        key
        for key, value in latest(settings, changelog).items()
        if value is not None and address.encode() in value
    }


def assert_forgotten(settings: Settings, names: TopicNames) -> None:
    for topic in (names.recipient_state, names.suppressions):
        values = latest(settings, topic)
        assert values.get(ANN.encode()) is None, f"{topic} still holds {ANN}"
    scoped = latest(settings, names.scoped_suppressions)
    assert [key for key, value in scoped.items() if ANN.encode() in key and value] == []
    assert latest(settings, names.recipient_state).get(BOB.encode()) is not None


def webhook(recipient: str, message_id: str, event_id: str, at: int) -> dict:
    """A Maileroo delivery to `recipient`, as an envelope."""
    payload = maileroo.sample_payload("delivered", recipient, message_id, at, event_id)
    return {"provider": "maileroo", "payload": payload}


def test_an_erased_recipient_is_forgotten_and_stays_forgotten_through_a_replay(
    erasing: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    names = TopicNames(erasing.topic_prefix)
    port = free_port()
    with running_worker(erasing, tmp_path / "worker.log", web_port=port) as worker:
        erase_one_of_two(erasing, names, capsys, f"http://127.0.0.1:{port}")
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    with running_worker(erasing, tmp_path / "restarted.log") as restarted:
        # a new worker knows the erasure from email.erasures before it processes anything
        send_envelopes(erasing, [webhook(ANN, "a5@x", "a5", int(time.time() * 1000))])
        wait_for_commits(erasing, 120, lambda: None)
        assert restarted.poll() is None, (tmp_path / "restarted.log").read_text()[-3000:]
    assert_forgotten(erasing, names)
    bob_before = latest(erasing, names.recipient_state)[BOB.encode()]

    replay(capsys, tmp_path)

    assert_forgotten(erasing, names)
    assert message_entries_naming(ANN, erasing) == set()  # the rebuilt table never had it
    assert latest(erasing, names.recipient_state)[BOB.encode()] == bob_before
    # the replayed ERASE command wrote the same record again; nothing tombstoned it
    assert latest(erasing, names.erasures).keys() == {address_hash(ANN, KEY).encode()}
    assert None not in latest(erasing, names.erasures).values()
    assert no_trace_of(ANN, erasing, names.erasures)

    # whoever cannot recognize the erased addresses must not start: they would read as mailable
    keyless = settings_env(dataclasses.replace(erasing, erasure_key=None))
    keyless.pop("MAILSTREAM_ERASURE_KEY", None)
    worker = subprocess.run(
        [sys.executable, "-m", "mailstream", "worker", "--without-web"],
        env=keyless,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert "holds erasures and MAILSTREAM_ERASURE_KEY is not set" in worker.stderr
    with pytest.raises(ErasureKeyMissing, match="holds erasures"):
        SuppressionList(dataclasses.replace(erasing, erasure_key=None))
    with (
        SuppressionList(dataclasses.replace(erasing, erasure_key="another key")) as wrong,
        pytest.raises(ErasureKeyMismatch, match="another key"),
    ):
        wrong.wait_until_caught_up(timeout=30)


def erase_one_of_two(
    erasing: Settings, names: TopicNames, capsys: pytest.CaptureFixture[str], base: str
) -> None:
    now = int(time.time() * 1000)
    send_envelopes(
        erasing,
        [
            webhook(ANN, "a1@x", "a1", now - 2 * DAY),
            {
                "provider": "inboxroad",
                "payload": inboxroad.sample_payload("f", ANN, "a2@x", now - DAY),
            },
            webhook(BOB, "b1@x", "b1", now - DAY),
        ],
    )
    states = wait_for_states(erasing, {ANN, BOB})
    assert states[ANN]["status"] == "SUPPRESSED"

    capsys.readouterr()
    status = main(["erase", ANN.upper(), "--yes", "--note", "ticket 7", "--actor", "dpo@test"])
    output = capsys.readouterr()
    assert status == 0, output.err
    assert f"confirmed: {ANN} is erased" in output.out

    # later webhooks of the erased address: one joined through its message, one naming it
    send_envelopes(
        erasing,
        [
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload("opened", None, "a1@x", now - DAY, "a3"),
            },
            webhook(ANN, "a4@x", "a4", now),
            webhook(BOB, "b2@x", "b2", now),
        ],
    )
    wait_for_commits(erasing, 120, lambda: None)

    assert_forgotten(erasing, names)
    # the messages of later webhooks (a1, a4) are forgotten; one without a later event (a2)
    # keeps its entry until a replay rebuilds the table (README, Erasure)
    assert [key for key in message_entries_naming(ANN, erasing) if b"a2@x" not in key] == []
    erasures = read_to_end(erasing, names.erasures)
    assert [record.key for record in erasures] == [address_hash(ANN, KEY).encode()]
    assert no_trace_of(ANN, erasing, names.erasures)

    with SuppressionList(erasing) as suppressions:
        suppressions.wait_until_caught_up(timeout=30)
        assert suppressions.is_suppressed(ANN)
        assert suppressions.reason(ANN) == "ERASED"
        assert not suppressions.is_suppressed(BOB)

    wait_for_web(base)
    assert get(f"{base}/recipients/{ANN}/") == (200, {"erased": True, "suppressed": True})
    assert get(f"{base}/recipients/{ANN}/", token=None)[0] == 401
    assert get(f"{base}/recipients/{BOB}/")[0] == 200
