"""`mailstream replay` on the real broker: state built live from a generated campaign is
rebuilt from the raw topics, from the beginning or from a time between two rounds, and equals
the live state and the offline twin (`mailstream simulate`); a manual suppression (an
operator command) survives both."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from mailstream.cli import main
from mailstream.codec import codec_for
from mailstream.connectors.samples import campaign_rounds
from mailstream.policy import default_policy
from mailstream.recipient import RecipientState, scoped_suppressions, suppression_record
from mailstream.settings import Settings
from mailstream.streams.reader import latest_by_key, read_to_end, read_until
from mailstream.streams.simulate import simulate
from mailstream.topics import TopicNames
from tests.integration.harness import running_worker, send_envelopes

pytestmark = pytest.mark.kafka

STATE = codec_for("recipient_state")
SUPPRESSION = codec_for("suppression")
Envelopes = list[dict]
MANUAL = "manual@example.com"


@dataclass(frozen=True)
class Live:
    """What the live pipeline published for two rounds, and when round 2 started."""

    rounds: tuple[Envelopes, Envelopes]
    round_two_from_ms: int
    states: dict[str, dict]
    suppressions: dict[str, dict]


@pytest.fixture
def live(settings: Settings, names: TopicNames, tmp_path: Path) -> Live:
    """Two rounds through a live worker, each waited for (as in test_pipeline); the worker is
    stopped before the test runs, as an operator does before a replay."""
    first, second = campaign_rounds(recipients=100, rounds=2, seed=3)
    with running_worker(settings, tmp_path / "live-worker.log"):
        send_envelopes(settings, first)
        wait_for_states(settings, names, expected_states(first))
        round_two_from_ms = int(time.time() * 1000) + 1
        while time.time() * 1000 <= round_two_from_ms:  # round 2's timestamps come after it
            time.sleep(0.001)
        send_envelopes(settings, second)
        wait_for_states(settings, names, expected_states(first + second))
        assert (
            main(["suppress", "add", MANUAL, "--actor", "tester", "--note", "asked by phone"]) == 0
        )
    return Live((first, second), round_two_from_ms, *published(settings, names))


def expected_states(envelopes: Envelopes) -> dict[str, dict]:
    return {
        recipient: state.to_record()
        for recipient, state in simulate(envelopes, default_policy()).items()
    }


def without_manual(records: dict[str, dict]) -> dict[str, dict]:
    return {recipient: record for recipient, record in records.items() if recipient != MANUAL}


def expected_suppressions(states: dict[str, dict]) -> dict[str, dict]:
    records = {r: suppression_record(RecipientState.from_record(s)) for r, s in states.items()}
    return {recipient: record for recipient, record in records.items() if record is not None}


def wait_for_states(settings: Settings, names: TopicNames, expected: dict[str, dict]) -> None:
    read_until(
        settings,
        names.recipient_state,
        lambda records: states_of(latest_by_key(records)) == expected,
        timeout=120,
    )


def published(settings: Settings, names: TopicNames) -> tuple[dict[str, dict], dict[str, dict]]:
    """The latest value per key of both published topics (tombstoned keys left out)."""
    states = latest_by_key((r.key, r.value) for r in read_to_end(settings, names.recipient_state))
    suppressions = latest_by_key(
        (r.key, r.value) for r in read_to_end(settings, names.suppressions)
    )
    return states_of(states), {
        key.decode(): SUPPRESSION.decode(value)
        for key, value in suppressions.items()
        if value is not None
    }


def published_scopes(settings: Settings, names: TopicNames) -> set[tuple[str, str | None]]:
    """The [recipient, tenant] keys of email.suppressions.scoped holding a suppression."""
    latest = latest_by_key(
        (r.key, r.value) for r in read_to_end(settings, names.scoped_suppressions)
    )
    return {tuple(orjson.loads(key)) for key, value in latest.items() if value is not None}


def states_of(latest: dict[bytes, bytes | None]) -> dict[str, dict]:
    return {
        key.decode(): RecipientState.from_record(STATE.decode(value)).to_record()
        for key, value in latest.items()
        if value is not None
    }


def replay(capsys: pytest.CaptureFixture[str], tmp_path: Path, *arguments: str) -> str:
    capsys.readouterr()
    status = main(
        ["replay", "--yes", "--worker-log", str(tmp_path / "replay-worker.log"), *arguments]
    )
    output = capsys.readouterr()
    assert status == 0, (
        output.out + output.err + (tmp_path / "replay-worker.log").read_text()[-3000:]
    )
    return output.out


def test_a_full_replay_rebuilds_the_live_state(
    settings: Settings,
    names: TopicNames,
    live: Live,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    everything = live.rounds[0] + live.rounds[1]
    assert without_manual(live.states) == expected_states(everything)

    output = replay(capsys, tmp_path)

    states, suppressions = published(settings, names)
    assert states == live.states
    assert suppressions == live.suppressions
    assert without_manual(suppressions) == expected_suppressions(without_manual(live.states))
    assert suppressions[MANUAL]["actor"] == "tester"
    total = len(everything) + 1  # and the operator command
    assert f"replayed {total:,} of {total:,} records (100.0%)" in output
    assert f"replay done: {total:,} records replayed" in output
    assert f"{len(live.states):,} recipients published, 0 stale keys tombstoned" in output


def test_a_replay_from_a_time_rebuilds_from_the_later_records_only(
    settings: Settings,
    names: TopicNames,
    live: Live,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    expected = expected_states(live.rounds[1])
    assert expected != without_manual(live.states)
    scopes_before = published_scopes(settings, names)

    output = replay(capsys, tmp_path, "--from", str(live.round_two_from_ms))

    states, suppressions = published(settings, names)
    scopes = published_scopes(settings, names)
    assert scopes == {
        (recipient, tenant)
        for recipient, state in states.items()
        for tenant in scoped_suppressions(RecipientState.from_record(state))
    }, "no stale scope is left on email.suppressions.scoped"
    assert without_manual(states) == expected
    assert states[MANUAL] == live.states[MANUAL], "commands replay from the beginning"
    assert without_manual(suppressions) == expected_suppressions(expected)
    assert suppressions[MANUAL] == live.suppressions[MANUAL]
    expected[MANUAL] = live.states[MANUAL]
    total = len(live.rounds[1]) + 1  # and the operator command
    assert f"replay done: {total:,} records replayed" in output
    stale = (
        len(live.states.keys() - states.keys())
        + len(live.suppressions.keys() - suppressions.keys())
        + len(scopes_before - scopes)
    )
    assert stale, "the campaign leaves recipients and suppressions that only round 1 made"
    assert f"{len(expected):,} recipients published, {stale:,} stale keys tombstoned" in output
