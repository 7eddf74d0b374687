"""The policy file: documented defaults, user overrides, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstream.policy import (
    DEFAULT_POLICY_FILE,
    Policy,
    PolicyError,
    ScoreWeights,
    default_policy,
    load_policy,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_come_from_the_seeds() -> None:
    policy = load_policy(None)
    assert policy.machine_window_seconds == 5
    assert policy.machine_window_ms == 5_000
    assert policy.score == ScoreWeights(
        delivered=0, first_open=5, third_open_bonus=10, click=15, reply=30
    )
    assert policy.inactivity_reset_days == 30
    assert policy.inactivity_reset_ms == 30 * 86_400_000
    assert policy.soft_bounce_limit == 5
    assert policy.delivery_resets_soft_bounces is True
    assert policy.unsubscribe_url_patterns == ("unsubscribe", "optout", "opt-out")
    assert policy.dedupe_window == 256
    assert policy.max_pending_per_message == 100


def test_default_policy_is_read_once() -> None:
    assert default_policy() is default_policy()
    assert default_policy() == load_policy(None)


def test_every_key_of_the_default_file_is_documented() -> None:
    lines = DEFAULT_POLICY_FILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"[a-z_]+:", line):
            assert lines[number - 1].startswith("#"), f"no comment above {line!r}"
        elif re.match(r"  [a-z_]+: \d", line):
            assert "#" in line, f"no comment on {line.strip()!r}"


def test_a_user_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, "soft_bounce_limit: 3\nscore:\n  click: 20\n")
    policy = load_policy(path)
    assert policy.soft_bounce_limit == 3
    assert policy.score.click == 20
    assert policy.score.first_open == 5
    assert policy.dedupe_window == 256


def test_a_list_replaces_the_default_list(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "machine_user_agents: [MyScanner]\n"))
    assert policy.machine_user_agents == ("MyScanner",)
    assert policy.is_machine_user_agent("myscanner/1.0")
    assert not policy.is_machine_user_agent("Mimecast")


def test_an_empty_user_file_changes_nothing(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, "# nothing\n")) == load_policy(None)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("soft_bounce_limt: 3\n", "'soft_bounce_limt'"),
        ("score:\n  clik: 20\n", "'score.clik'"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(named)):
        load_policy(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("soft_bounce_limit: five\n", "soft_bounce_limit"),
        ("soft_bounce_limit: 0\n", "soft_bounce_limit"),
        ("dedupe_window: true\n", "dedupe_window"),
        ("max_pending_per_message: -1\n", "max_pending_per_message"),
        ("machine_window_seconds: soon\n", "machine_window_seconds"),
        ("inactivity_reset_days: 0\n", "inactivity_reset_days"),
        ("delivery_resets_soft_bounces: 'yes'\n", "delivery_resets_soft_bounces"),
        ("machine_user_agents: Mimecast\n", "machine_user_agents"),
        ("unsubscribe_url_patterns: [1, 2]\n", "unsubscribe_url_patterns"),
        ("machine_user_agent_patterns: ['(']\n", "machine_user_agent_patterns"),
        ("score: 5\n", "score"),
        ("score:\n  reply: -30\n", "score.reply"),
        ("score:\n  click: 1.5\n", "score.click"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError, match=re.escape(named)) as raised:
        load_policy(path)
    assert str(path) in str(raised.value)


def test_fractional_seconds_and_days_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "machine_window_seconds: 2.5\ninactivity_reset_days: 0.5\n")
    policy = load_policy(path)
    assert policy.machine_window_ms == 2_500
    assert policy.inactivity_reset_ms == 43_200_000


@pytest.mark.parametrize("text", ["- a\n- b\n", "key: [unclosed\n"])
def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(PolicyError, match=r"policy\.yaml"):
        load_policy(write(tmp_path, text))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "TelegramBot (like TwitterBot)",
        "Mimecast URL Protect",
        "PROOFPOINT url defense",
        "python-requests/2.31.0",
        "curl/8.4.0",
        "Microsoft Office Existence Discovery",
    ],
)
def test_known_machine_user_agents_match_case_insensitively(user_agent: str) -> None:
    assert default_policy().is_machine_user_agent(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        # Gmail's proxy fetches when the reader opens the message: human (see policy.yaml).
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Mobile Safari/537.36",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    ],
)
def test_people_are_not_machines(user_agent: str) -> None:
    assert not default_policy().is_machine_user_agent(user_agent)


def test_unsubscribe_urls_match_case_insensitively() -> None:
    policy = default_policy()
    assert policy.is_unsubscribe_url("https://example.com/UnSubscribe?u=1")
    assert policy.is_unsubscribe_url("https://example.com/email/opt-out")
    assert policy.is_unsubscribe_url("https://example.com/OPTOUT")
    assert not policy.is_unsubscribe_url("https://example.com/onepager")


def test_empty_lists_match_nothing(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            "machine_user_agents: []\nmachine_user_agent_patterns: []\n"
            "unsubscribe_url_patterns: []\n",
        )
    )
    assert not policy.is_machine_user_agent("curl/8.4.0")
    assert not policy.is_unsubscribe_url("https://example.com/unsubscribe")


def test_a_policy_is_immutable() -> None:
    policy: Policy = default_policy()
    with pytest.raises(AttributeError):
        policy.soft_bounce_limit = 1  # type: ignore[misc]
