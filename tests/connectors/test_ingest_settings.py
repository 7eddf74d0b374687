"""MAILSTREAM_INGEST_* variables: per-provider credentials, limits, and no secret in repr."""

from __future__ import annotations

import pytest

from mailstream.connectors.ingest.app import build_routes
from mailstream.connectors.registry import PROVIDERS
from mailstream.settings import IngestSettings, ProviderAuth, Settings, SettingsError


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
