"""`mailstream simulate`: the offline twin, run in-process on payloads of all three providers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstream.cli import main
from mailstream.connectors.registry import get_provider
from mailstream.connectors.samples import campaign_rounds
from mailstream.policy import default_policy
from mailstream.recipient import RecipientStatus, SuppressionReason
from mailstream.streams.simulate import simulate

MAILEROO_MESSAGE = "<499840827041934075286474.8057.2024315233239@domain.com>"
HUMAN_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0"
)


def maileroo(event_type: str, event_id: str, at: int, **event_data: Any) -> dict[str, Any]:
    """Maileroo's documented shape (seeds/002); opens and clicks name no recipient."""
    return {
        "provider": "maileroo",
        "payload": {
            "domain_id": 774,
            "event_data": event_data,
            "event_id": event_id,
            "event_time": at,
            "event_type": event_type,
            "inserted_at": "2024-03-15T23:32:57.401Z",
            "message_id": MAILEROO_MESSAGE,
            "message_reference_id": "0ed7094bf9509ac3145c4aa97182be44",
            "tags": None,
            "user_id": 323,
        },
    }


def inboxroad(kind: str, at: int, bounce_category: str, diagnostic: str) -> dict[str, Any]:
    """Inboxroad's documented shape (seeds/003), sent as the raw JSON text."""
    payload = {
        "type": kind,
        "timeLogged": str(at),
        "orig": "adress@rp.domain.com",
        "rcpt": "Example@Domain.net",
        "dsnAction": "relayed" if kind == "d" else "failed",
        "dsnStatus": "2.0.0 (success)" if kind == "d" else "5.0.0 (undefined status)",
        "dsnDiag": diagnostic,
        "bounceCat": bounce_category,
        "rcvSmtpUser": "user",
        "header_Message-Id": "<80894b937274b975f9e3ab05f0a009636d2016d9@rp.domain.com>",
        "vmta": "a000",
    }
    return {"provider": "inboxroad", "payload": orjson.dumps(payload).decode()}


def mailbot(event_type: str, event_id: str, created_at: str, **fields: Any) -> dict[str, Any]:
    """mailbot's flat shape, as its guide's handler reads it (seeds/000)."""
    payload = {
        "event_id": event_id,
        "event_type": event_type,
        "created_at": created_at,
        "message_id": "msg_8f2a",
        "inbox_id": "inb_xxx",
        "to": ["Lead@Prospect.com"],
        "labels": ["outbound", "campaign:march-followup"],
        **fields,
    }
    return {"provider": "mailbot", "payload": payload, "received_at": "2024-03-01T10:00:09Z"}


ENVELOPES: list[dict[str, Any]] = [
    # Maileroo: the click arrives before the delivery that names the recipient, 3 s after it.
    maileroo("clicked", "mr-click", 1710545577, ip="103.120.6.123",
             original_url="https://example.com/confirm/link", user_agent=HUMAN_UA),
    maileroo("delivered", "mr-delivered", 1710545574, to="jane.doe@example.com"),
    maileroo("opened", "mr-open", 1710545640, ip="103.120.6.123", user_agent=HUMAN_UA),
    maileroo("opened", "mr-open", 1710545640, ip="103.120.6.123", user_agent=HUMAN_UA),
    # Inboxroad: a remote bounce (rb) after the delivery (d) of the same message.
    inboxroad("d", 1695222842, "other", "smtp;250 2.0.0 OK"),
    inboxroad("rb", 1695226442, "bad-mailbox",
              "smtp;550 5.0.0 <example@domain.net>... No such user"),
    # mailbot: delivered, a machine open at once, a human open and click, then unsubscribe.
    mailbot("message.delivered", "mb-1", "2024-03-01T10:00:00Z"),
    mailbot("message.opened", "mb-2", "2024-03-01T10:00:01Z", user_agent=HUMAN_UA),
    mailbot("message.opened", "mb-3", "2024-03-01T11:00:00Z", user_agent=HUMAN_UA),
    mailbot("message.clicked", "mb-4", "2024-03-01T11:00:30Z", user_agent=HUMAN_UA,
            url="https://yourapp.example.com/onepager"),
    mailbot("message.clicked", "mb-5", "2024-03-02T09:00:00Z", user_agent=HUMAN_UA,
            url="https://yourapp.example.com/unsubscribe?u=42"),
]  # fmt: skip


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def envelope_lines() -> list[str]:
    return [orjson.dumps(envelope).decode() for envelope in ENVELOPES]


def test_prints_every_recipient_sorted_with_iso_timestamps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "history.jsonl", envelope_lines())
    assert main(["simulate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    states = [orjson.loads(line) for line in out.splitlines()]
    assert [s["recipient"] for s in states] == [
        "example@domain.net",
        "jane.doe@example.com",
        "lead@prospect.com",
    ]
    inbox, jane, lead = states
    assert "recent_event_ids" not in jane

    assert (inbox["delivered"], inbox["hard_bounces"]) == (1, 1)
    assert (inbox["status"], inbox["suppression_reason"]) == ("SUPPRESSED", "HARD_BOUNCE")
    assert inbox["suppressed_at"] == "2023-09-20T16:14:02.000Z"

    assert (jane["machine_clicks"], jane["clicks"]) == (1, 0)  # 3 s after delivery
    assert (jane["opens"], jane["score"], jane["delivered"]) == (1, 5, 1)  # duplicate dropped
    assert jane["last_open_at"] == "2024-03-15T23:34:00.000Z"
    assert jane["status"] == "ACTIVE" and jane["suppression_reason"] is None

    assert (lead["machine_opens"], lead["opens"], lead["clicks"]) == (1, 1, 1)
    assert lead["score"] == 5 + 15
    assert (lead["status"], lead["suppression_reason"]) == ("SUPPRESSED", "UNSUBSCRIBE")
    assert lead["last_signal_at"] == "2024-03-01T11:00:30.000Z"
    assert lead["updated_at"] == "2024-03-02T09:00:00.000Z"


def test_a_policy_file_changes_the_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "history.jsonl", envelope_lines())
    policy = tmp_path / "strict.yaml"
    policy.write_text("machine_window_seconds: 0\nscore:\n  click: 20\n", encoding="utf-8")
    assert main(["simulate", str(path), "--policy", str(policy)]) == 0
    jane = orjson.loads(capsys.readouterr().out.splitlines()[1])
    assert (jane["machine_clicks"], jane["clicks"], jane["score"]) == (0, 1, 25)


def test_bad_envelopes_are_reported_by_line_and_the_rest_is_processed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        envelope_lines()[4],
        "{not json",
        "",
        '{"provider": "nosuchprovider", "payload": {}}',
        '{"payload": {}}',
        orjson.dumps(maileroo("opened", "mr-lost", 1710545640, user_agent=HUMAN_UA)).decode(),
        '{"provider": "inboxroad", "payload": "[1, 2]", "received_at": "yesterday"}',
    ]
    path = write_jsonl(tmp_path / "history.jsonl", lines)
    assert main(["simulate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert [orjson.loads(line)["recipient"] for line in out.splitlines()] == ["example@domain.net"]
    reported = err.splitlines()
    assert reported[0].startswith(f"{path}:2: not a JSON envelope")
    assert reported[1].startswith(f"{path}:4: unknown_provider")
    assert reported[2] == f"{path}:5: envelope without a provider name"
    assert reported[3].startswith(f"{path}:7: received_at 'yesterday'")
    assert reported[4].startswith(f"{path}:6: event mr-lost")
    assert "names its recipient" in reported[4]
    assert len(reported) == 5


def test_an_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_bad_policy_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "history.jsonl", envelope_lines())
    policy = tmp_path / "typo.yaml"
    policy.write_text("soft_bounce_limt: 3\n", encoding="utf-8")
    assert main(["simulate", str(path), "--policy", str(policy)]) == 2
    assert "'soft_bounce_limt'" in capsys.readouterr().err


def test_the_core_loop_is_callable_without_files() -> None:
    problems: list[tuple[int, str]] = []
    envelopes = [*ENVELOPES, {"provider": "nobody", "payload": "{}"}]
    states = simulate(
        envelopes, default_policy(), lambda index, reason: problems.append((index, reason))
    )
    assert sorted(states) == ["example@domain.net", "jane.doe@example.com", "lead@prospect.com"]
    assert states["example@domain.net"].suppression_reason is SuppressionReason.HARD_BOUNCE
    assert states["jane.doe@example.com"].status is RecipientStatus.ACTIVE
    assert [index for index, _ in problems] == [len(ENVELOPES)]


def test_simulating_twice_gives_the_same_states() -> None:
    """Replaying the whole history again (a redelivery) changes nothing."""
    once = simulate(ENVELOPES, default_policy())
    twice = simulate(ENVELOPES + ENVELOPES, default_policy())
    assert {r: s.to_record() for r, s in once.items()} == {
        r: s.to_record() for r, s in twice.items()
    }


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_simulate_does_not_depend_on_the_order_of_messages_in_the_file(seed: int) -> None:
    """Any interleaving that keeps each message's own webhooks in order gives the same states
    (the campaign generator mixes soft bounces, deliveries, opens, clicks and complaints)."""
    envelopes = [e for round_ in campaign_rounds(25, rounds=3, seed=seed % 1000) for e in round_]
    by_message: dict[bytes | None, list[dict[str, Any]]] = {}
    for envelope in envelopes:
        key = get_provider(envelope["provider"]).message_key(orjson.dumps(envelope["payload"]))
        by_message.setdefault(key, []).append(envelope)
    rng = random.Random(seed)
    queues = [list(messages) for messages in by_message.values()]
    interleaved: list[dict[str, Any]] = []
    while queues:
        queue = rng.choice(queues)
        interleaved.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    expected = {r: s.to_record() for r, s in simulate(envelopes, default_policy()).items()}
    shuffled = {r: s.to_record() for r, s in simulate(interleaved, default_policy()).items()}
    assert shuffled == expected
