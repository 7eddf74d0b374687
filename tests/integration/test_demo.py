"""The README's first command: the demo runs green and its output shows every rule."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.demo import reader_address

pytestmark = pytest.mark.kafka


def state_rows(output: str) -> dict[str, list[str]]:
    """The recipient states table of the demo's output, by recipient."""
    states_table = output.split("Recipient states")[1].split("Suppressions")[0]
    return {
        line.split()[0]: line.split()
        for line in states_table.splitlines()
        if line.split() and line.split()[0].endswith("@example.com")
    }


def test_demo_shows_every_rule_and_stops_what_it_started() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstream", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = state_rows(result.stdout)
    assert lines["alice@example.com"][1:4] == ["ACTIVE", "None", "60"]
    assert lines["bob@example.com"][1:3] == ["SUPPRESSED", "HARD_BOUNCE"]
    assert lines["carol@example.com"][1:3] == ["SUPPRESSED", "SOFT_BOUNCE_LIMIT"]
    assert lines["dave@example.com"][1:3] == ["SUPPRESSED", "COMPLAINT"]
    assert lines["erin@example.com"][1:3] == ["SUPPRESSED", "UNSUBSCRIBE"]
    assert lines["frank@example.com"][1:7] == ["ACTIVE", "None", "5", "1", "1", "1"]
    assert lines["grace@example.com"][1:4] == ["ACTIVE", "None", "0"]
    for provider in sorted(set(PROVIDERS) - {"mailbot", "maileroo", "inboxroad"}):
        assert lines[reader_address(provider)][1:7] == ["ACTIVE", "None", "5", "1", "1", "0"]
    assert "forged maileroo webhook: HTTP 401" in result.stdout
    assert "Dead letters (email.events.dlq): 1" in result.stdout
    assert "invalid_json" in result.stdout
    # it ends with the deliverability table (a window per provider it posted through) and
    # the dashboard's address
    table = result.stdout.split("Deliverability (email.deliverability)")[1]
    for provider in PROVIDERS:
        assert f"\n{provider} " in table
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/ ", table)


def test_demo_with_the_registry_uses_the_confluent_format_and_prints_its_subjects() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstream", "demo", "--registry"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    subjects = result.stdout.split("Schema registry subjects")[1].split("6. stopping")[0]
    for name in ("DeadLetter", "EmailEvent", "RecipientState", "Suppression"):
        [row] = [line for line in subjects.splitlines() if f"mailstream.v1.{name} " in line]
        assert row.split()[1:] == ["1", "BACKWARD"], row
    assert state_rows(result.stdout)["alice@example.com"][1:4] == ["ACTIVE", "None", "60"]
