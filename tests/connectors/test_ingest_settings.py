"""MAILSTREAM_INGEST_* variables: per-provider credentials, limits, and no secret in repr."""

from __future__ import annotations

import pytest

from mailstream.connectors.base import verify_config
from mailstream.settings import IngestSettings, Settings, SettingsError


def test_defaults_refuse_unsigned_webhooks_and_limit_bodies_to_one_mebibyte() -> None:
    ingest = Settings.from_env({}).ingest
    assert ingest.max_body_bytes == 1024 * 1024
    assert ingest.produce_timeout_seconds == 10.0
    for provider in ("mailbot", "maileroo", "inboxroad"):
        config = verify_config(ingest, provider)
        assert config.secrets == ()
        assert config.allow_unsigned is False
    assert verify_config(ingest, "mailbot").max_age_seconds == 300
    assert verify_config(ingest, "inboxroad").mode == "hmac"


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
    }
    ingest = Settings.from_env(env).ingest
    mailbot = verify_config(ingest, "mailbot")
    assert mailbot.secrets == ("current-secret", "previous-secret")
    assert mailbot.max_age_seconds == 60
    maileroo = verify_config(ingest, "maileroo")
    assert (maileroo.signature_header, maileroo.allow_unsigned, maileroo.secrets) == (
        "X-Signature", True, ()
    )
    inboxroad = verify_config(ingest, "inboxroad")
    assert inboxroad.mode == "basic"
    assert inboxroad.basic_auth == (("roadie", "pa:ss"), ("backup", "other"))
    assert inboxroad.api_key_header == "X-Key"
    assert (ingest.max_body_bytes, ingest.produce_timeout_seconds) == (4096, 2.5)


def test_secrets_and_passwords_never_appear_in_repr() -> None:
    env = {
        "MAILSTREAM_INGEST_MAILBOT_SECRETS": "mailbot-hush",
        "MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "roadie:inboxroad-hush",
    }
    settings = Settings.from_env(env)
    for text in (repr(settings), str(settings), repr(verify_config(settings.ingest, "inboxroad"))):
        assert "hush" not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAILSTREAM_INGEST_MAILEROO_ALLOW_UNSIGNED": "maybe"}, "MAILEROO_ALLOW_UNSIGNED"),
        ({"MAILSTREAM_INGEST_INBOXROAD_MODE": "oauth"}, "INBOXROAD_MODE"),
        ({"MAILSTREAM_INGEST_INBOXROAD_BASIC_AUTH": "no-colon"}, "INBOXROAD_BASIC_AUTH"),
        ({"MAILSTREAM_INGEST_MAX_BODY_BYTES": "1MB"}, "MAX_BODY_BYTES"),
        ({"MAILSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS": "soon"}, "PRODUCE_TIMEOUT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_a_provider_without_settings_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="sendgrid"):
        verify_config(IngestSettings(), "sendgrid")
