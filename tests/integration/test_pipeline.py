"""The pipeline on the real broker: raw webhooks in, canonical events, states and
suppressions out, checked against the offline twin (`mailstream simulate`)."""

from __future__ import annotations

import pytest

from mailstream.codec import codec_for
from mailstream.connectors import inboxroad, mailbot, maileroo
from mailstream.connectors.base import HUMAN_AGENT
from mailstream.connectors.samples import campaign_rounds
from mailstream.policy import default_policy
from mailstream.recipient import RecipientState
from mailstream.settings import Settings
from mailstream.streams.reader import latest_by_key, read_until
from mailstream.streams.simulate import simulate
from mailstream.topics import TopicNames
from tests.integration.harness import send_envelopes

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
STATE = codec_for("recipient_state")
EVENT = codec_for("email_event")
SUPPRESSION = codec_for("suppression")
DEAD_LETTER = codec_for("dead_letter")


def states_of(records: list[tuple[bytes | None, bytes | None]]) -> dict[str, RecipientState]:
    return {
        key.decode(): RecipientState.from_record(STATE.decode(value))
        for key, value in latest_by_key(records).items()
        if value is not None
    }


def test_webhooks_of_every_provider_become_events_states_and_suppressions(
    settings: Settings, names: TopicNames, worker: None
) -> None:
    envelopes = [
        {
            "provider": "inboxroad",
            "payload": inboxroad.sample_payload("d", "Ann@Example.com", "ir1@x", T0),
        },
        {
            "provider": "inboxroad",
            "payload": inboxroad.sample_payload("b", "gone@example.com", "ir2@x", T0, bounce=0),
        },
        {
            "provider": "maileroo",
            "payload": maileroo.sample_payload("delivered", "cy@example.com", "mr1@x", T0, "mr-e1"),
        },
        # An open arriving before its message's delivery is parked, then applied.
        {
            "provider": "mailbot",
            "payload": mailbot.sample_payload(
                "message.opened", None, "mb1@x", T0 + 90_000, "mb-e2", user_agent=HUMAN_AGENT
            ),
        },
        {
            "provider": "mailbot",
            "payload": mailbot.sample_payload(
                "message.delivered", "dee@example.com", "mb1@x", T0, "mb-e1"
            ),
        },
        {"provider": "maileroo", "payload": b"{not json"},
        {
            "provider": "maileroo",
            "payload": maileroo.sample_payload(
                "clicked", None, "mr1@x", T0 + 60_000, "mr-e2", original_url="https://example.com/a"
            ),
        },
        {
            "provider": "maileroo",
            "payload": maileroo.sample_payload(
                "complained", "cy@example.com", "mr1@x", T0 + 120_000, "mr-e3"
            ),
        },
    ]
    send_envelopes(settings, envelopes)

    expected_recipients = {
        "ann@example.com",
        "gone@example.com",
        "cy@example.com",
        "dee@example.com",
    }
    state_records = read_until(
        settings,
        names.recipient_state,
        lambda records: (
            _covers(states_of(records), expected_recipients)
            and states_of(records)["cy@example.com"].complaints == 1
            and states_of(records)["dee@example.com"].opens == 1
        ),
    )
    states = states_of(state_records)
    assert states["ann@example.com"].delivered == 1
    assert states["gone@example.com"].status == "SUPPRESSED"
    assert states["gone@example.com"].suppression_reason == "HARD_BOUNCE"
    assert states["cy@example.com"].clicks == 1
    assert states["cy@example.com"].score == 15
    complained = states["cy@example.com"]
    assert complained.suppression_reason is None, "a complaint is its tenant's"
    [(tenant, view)] = complained.tenants.items()
    assert view.suppression_reason == "COMPLAINT"
    assert complained.suppressed_for(tenant) and not complained.suppressed_for("another team")
    assert states["dee@example.com"].score == 5

    suppressions = {
        key.decode(): SUPPRESSION.decode(value)
        for key, value in latest_by_key(
            read_until(
                settings, names.suppressions, lambda records: len(latest_by_key(records)) >= 2
            )
        ).items()
        if value is not None
    }
    assert {k: v["reason"] for k, v in suppressions.items()} == {
        "gone@example.com": "HARD_BOUNCE",
        "cy@example.com": "COMPLAINT",
    }
    assert suppressions["cy@example.com"]["event_id"] == "mr-e3"

    events = [
        EVENT.decode(value)
        for _, value in read_until(settings, names.events, lambda r: len(r) >= 7)
    ]
    click = next(e for e in events if e["event_id"] == "mr-e2")
    assert click["event_type"] == "CLICKED"
    assert click["recipient"] == "cy@example.com", "resolved from the message's delivery"
    assert click["delivered_at"] == T0
    assert click["url"] == "https://example.com/a"

    dead = [
        DEAD_LETTER.decode(value)
        for _, value in read_until(settings, names.dead_letters, lambda r: len(r) >= 1)
    ]
    assert len(dead) == 1
    assert dead[0]["error_kind"] == "invalid_json"
    assert dead[0]["source_topic"] == names.raw("maileroo")
    assert dead[0]["payload"] == b"{not json"
    assert dead[0]["source_offset"] >= 0


def test_generated_campaign_state_equals_the_offline_twin(
    settings: Settings, names: TopicNames, worker: None
) -> None:
    """Rounds are sent one after the other (a message's events share a partition, so their
    order holds; messages of one recipient in different rounds are ordered by the wait)."""
    sent: list[dict] = []
    for envelopes in campaign_rounds(recipients=150, rounds=3, seed=11):
        send_envelopes(settings, envelopes)
        sent.extend(envelopes)
        expected = {
            recipient: state.to_record()
            for recipient, state in simulate(sent, default_policy()).items()
        }
        records = read_until(
            settings,
            names.recipient_state,
            lambda r, expected=expected: published(r) == expected,
            timeout=120,
        )
        assert published(records) == expected


def published(records: list[tuple[bytes | None, bytes | None]]) -> dict[str, dict]:
    return {recipient: state.to_record() for recipient, state in states_of(records).items()}


def _covers(states: dict[str, RecipientState], recipients: set[str]) -> bool:
    return recipients <= states.keys()
