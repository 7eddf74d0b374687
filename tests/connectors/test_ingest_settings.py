"""MAILSTREAM_INGEST_* variables: per-provider credentials, limits, and no secret in repr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from mailstream.cli import main
from mailstream.connectors.ingest.app import build_routes
from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.broker import free_port
from mailstream.settings import IngestSettings, ProviderAuth, Settings, SettingsError
from mailstream.topics import TopicNames, topic_specs

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 + 12


def test_defaults_refuse_unsigned_webhooks_and_limit_bodies_to_one_mebibyte() -> None:
    ingest = Settings.from_env({}).ingest
    assert ingest.max_body_bytes == 1024 * 1024
    assert ingest.produce_timeout_seconds == 10.0
    for provider in ("mailbot", "maileroo", "inboxroad"):
        config = ingest.auth(provider)
        assert config.secrets == ()
        assert config.allow_unsigned is False
    assert ingest.auth("mailbot").max_age_seconds == 300
    assert ingest.auth("inboxroad").mode == "hmac"
    assert ingest.read_timeout_seconds == 10.0
    assert (ingest.dedupe_window_seconds, ingest.dedupe_max_entries) == (3600.0, 100_000)


def test_each_provider_reads_its_own_variables() -> None:
    env = {
        "MAILSTREAM_INGEST_MAILBOT_SECRETS": "current-secret, previous-secret",
        "MAILSTREAM_INGEST_MAILBOT_MAX_AGE_SECONDS": "60",
        "MAILSTREAM_INGEST_MAILEROO_SIGNATURE_HEADER": "X-Signature",
        "MAILSTREAM_INGEST_MAILEROO_ALLOW_UNSIGNED": "true",
        "MAILSTREAM_INGEST_INBOXROAD_MODE": "basic",
        "MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "roadie:pa:ss,backup:other",
        "MAILSTREAM_INGEST_INBOXROAD_API_KEY_HEADER": "X-Key",
        "MAILSTREAM_INGEST_MAX_BODY_BYTES": "4096",
        "MAILSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS": "2.5",
        "MAILSTREAM_INGEST_READ_TIMEOUT_SECONDS": "3",
        "MAILSTREAM_INGEST_DEDUPE_WINDOW_SECONDS": "0",
        "MAILSTREAM_INGEST_DEDUPE_MAX_ENTRIES": "500",
    }
    ingest = Settings.from_env(env).ingest
    mailbot = ingest.auth("mailbot")
    assert mailbot.secrets == ("current-secret", "previous-secret")
    assert mailbot.max_age_seconds == 60
    maileroo = ingest.auth("maileroo")
    assert (maileroo.signature_header, maileroo.allow_unsigned, maileroo.secrets) == (
        "X-Signature",
        True,
        (),
    )
    inboxroad = ingest.auth("inboxroad")
    assert inboxroad.mode == "basic"
    assert inboxroad.basic_auth == (("roadie", "pa:ss"), ("backup", "other"))
    assert inboxroad.api_key_header == "X-Key"
    assert (ingest.max_body_bytes, ingest.produce_timeout_seconds) == (4096, 2.5)
    assert ingest.read_timeout_seconds == 3.0
    assert (ingest.dedupe_window_seconds, ingest.dedupe_max_entries) == (0.0, 500)
    assert set(ingest.providers) == {"mailbot", "maileroo", "inboxroad"}


def test_secrets_and_passwords_never_appear_in_repr() -> None:
    env = {
        "MAILSTREAM_INGEST_MAILBOT_SECRETS": "mailbot-hush",
        "MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "roadie:inboxroad-hush",
    }
    settings = Settings.from_env(env)
    for text in (repr(settings), str(settings), repr(settings.ingest.auth("inboxroad"))):
        assert "hush" not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAILSTREAM_INGEST_MAILEROO_ALLOW_UNSIGNED": "maybe"}, "MAILEROO_ALLOW_UNSIGNED"),
        ({"MAILSTREAM_INGEST_INBOXROAD_MODE": "oauth"}, "INBOXROAD_MODE"),
        ({"MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "no-colon"}, "INBOXROAD_BASIC_AUTH"),
        ({"MAILSTREAM_INGEST_MAX_BODY_BYTES": "1MB"}, "MAX_BODY_BYTES"),
        ({"MAILSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS": "soon"}, "PRODUCE_TIMEOUT_SECONDS"),
        ({"MAILSTREAM_INGEST_MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({"MAILSTREAM_INGEST_READ_TIMEOUT_SECONDS": "0"}, "READ_TIMEOUT_SECONDS"),
        ({"MAILSTREAM_INGEST_DEDUPE_WINDOW_SECONDS": "-1"}, "DEDUPE_WINDOW_SECONDS"),
        ({"MAILSTREAM_INGEST_DEDUPE_MAX_ENTRIES": "0"}, "DEDUPE_MAX_ENTRIES"),
        ({"MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "roadie:"}, "INBOXROAD_BASIC_AUTH"),
        ({"MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "ok:pw, :pw"}, "INBOXROAD_BASIC_AUTH"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_a_provider_without_settings_refuses_unsigned_requests() -> None:
    auth = IngestSettings().auth("a-provider-nobody-configured")
    assert (auth.secrets, auth.allow_unsigned) == ((), False)


def test_any_registry_name_reads_its_own_variables() -> None:
    env = {
        "MAILSTREAM_INGEST_AMAZON_SES_SECRETS": "ses-secret",
        "MAILSTREAM_INGEST_AMAZON_SES_MAX_AGE_SECONDS": "30",
    }
    ingest = Settings.from_env(env).ingest
    assert set(ingest.providers) == {"amazon_ses"}
    assert ingest.auth("amazon_ses") == ProviderAuth(secrets=("ses-secret",), max_age_seconds=30)


def test_settings_for_an_unregistered_provider_stop_the_ingest_at_start_up() -> None:
    settings = Settings.from_env({"MAILSTREAM_INGEST_MAILBOTT_SECRETS": "typo"})
    with pytest.raises(SettingsError, match=r"MAILSTREAM_INGEST_MAILBOTT_.*known: inboxroad"):
        build_routes(settings, PROVIDERS)


@pytest.mark.parametrize(
    ("entries", "problem"),
    [("roadie:", "empty password"), ("ok:secret-pw,:secret-pw", "empty user")],
)
def test_basic_auth_without_a_password_or_a_user_is_refused_without_echoing_it(
    entries: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": entries})
    assert "MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH" in raised.value.message
    assert problem in raised.value.message
    assert "secret-pw" not in raised.value.message


@pytest.mark.parametrize("pair", [("roadie", ""), ("", "password")])
def test_provider_auth_built_in_code_refuses_an_empty_user_or_password(
    pair: tuple[str, str],
) -> None:
    with pytest.raises(SettingsError, match="user and a password"):
        ProviderAuth(mode="basic", basic_auth=(pair,))


def test_mailstream_ingest_refuses_an_empty_password_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILSTREAM_INGEST_INBOXROAD_MODE", "basic")
    monkeypatch.setenv("MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH", "roadie:")
    assert main(["ingest", "--port", "0"]) == 2
    assert "MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH" in capsys.readouterr().err


def test_raw_topics_and_the_producer_take_a_record_of_the_largest_body() -> None:
    settings = Settings.from_env({})
    ingest = settings.ingest
    # the body, plus at least a maximal key, headers and lz4's growth of an incompressible body
    assert ingest.max_record_bytes >= ingest.max_body_bytes * 256 // 255 + 1024 + 8190 + 1024
    assert ingest.max_record_bytes > BROKER_DEFAULT_MAX_MESSAGE_BYTES
    specs = {spec.name: spec for spec in topic_specs(settings, PROVIDERS)}
    names = TopicNames(settings.topic_prefix)
    for provider in PROVIDERS:
        configs = specs[names.raw(provider)].configs
        assert configs["max.message.bytes"] == str(ingest.max_record_bytes)


@pytest.mark.parametrize(
    ("level", "log_format", "shows_info"),
    [(None, "text", True), ("WARNING", "text", False), (None, "json", True)],
)
def test_the_ingest_logs_at_mailstream_log_level_in_its_format(
    tmp_path: Path, level: str | None, log_format: str, shows_info: bool
) -> None:
    port = free_port()
    env = {**os.environ, "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    env.pop("MAILSTREAM_LOG_LEVEL", None)
    env["MAILSTREAM_LOG_FORMAT"] = log_format
    if level is not None:
        env["MAILSTREAM_LOG_LEVEL"] = level
    log = tmp_path / "ingest.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailstream", "ingest", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # listening means start-up (and its log line) is done
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the ingest did not listen"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    assert ("Running on" in log.read_text()) is shows_info, log.read_text()
    if log_format == "json":
        entries = [orjson.loads(line) for line in log.read_text().splitlines() if line]
        assert entries and all(
            {"time", "level", "logger", "message"} <= set(entry) for entry in entries
        )
        assert any(
            entry["logger"] == "mailstream.ingest" and "Running on" in entry["message"]
            for entry in entries
        )
