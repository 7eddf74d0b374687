from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailstream.settings import KafkaSettings, Settings, SettingsError


def test_defaults_point_at_a_local_plaintext_broker() -> None:
    settings = Settings.from_env({})
    assert settings.kafka.librdkafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "logger": logging.getLogger("mailstream.kafka"),
    }
    assert settings.topic_prefix == ""
    assert settings.partitions == 4


def test_plain_kafka_bootstrap_variable_is_honoured_and_prefixed_one_wins() -> None:
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:1"}).kafka.bootstrap_servers == "a:1"
    both = {"KAFKA_BOOTSTRAP_SERVERS": "a:1", "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS": "b:2"}
    assert Settings.from_env(both).kafka.bootstrap_servers == "b:2"


def test_sasl_ssl_scram_reaches_every_client_and_secrets_stay_hidden() -> None:
    env = {
        "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS": "bus:9096",
        "MAILSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MAILSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "MAILSTREAM_KAFKA_SASL_USERNAME": "svc-mailstream",
        "MAILSTREAM_KAFKA_SASL_PASSWORD": "hunter2-secret",
        "MAILSTREAM_PARTITIONS": "12",
    }
    settings = Settings.from_env(env)
    config = settings.kafka.librdkafka_config()
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == "hunter2-secret"
    assert settings.partitions == 12
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    faust_options = settings.kafka.faust_broker_options()
    assert faust_options["broker"] == "kafka://bus:9096"
    credentials = faust_options["broker_credentials"]
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert "hunter2-secret" not in repr(credentials)


def test_mutual_tls_passes_certificate_and_key(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_file=tmp_path / "ca.pem",
        ssl_cert_file=tmp_path / "client.pem",
        ssl_key_file=tmp_path / "client.key",
        ssl_key_password="keypass",
    )
    config = kafka.librdkafka_config()
    assert config["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert config["ssl.certificate.location"] == str(tmp_path / "client.pem")
    assert config["ssl.key.location"] == str(tmp_path / "client.key")
    assert "keypass" not in repr(kafka)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL"),
        ({"MAILSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_USERNAME"),
        (
            {
                "MAILSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "MAILSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI",
                "MAILSTREAM_KAFKA_SASL_USERNAME": "u",
                "MAILSTREAM_KAFKA_SASL_PASSWORD": "p",
            },
            "SASL_MECHANISM",
        ),
        ({"MAILSTREAM_KAFKA_SSL_CERT_FILE": "/c.pem"}, "SSL_KEY_FILE"),
        ({"MAILSTREAM_PARTITIONS": "many"}, "MAILSTREAM_PARTITIONS"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_log_level_is_one_setting_for_every_service() -> None:
    assert Settings.from_env({}).service_log_level("warning") == "WARNING"
    chosen = Settings.from_env({"MAILSTREAM_LOG_LEVEL": "debug"})
    assert chosen.service_log_level("warning") == "DEBUG"
    assert chosen.service_log_level("info") == "DEBUG"
    with pytest.raises(SettingsError, match="MAILSTREAM_LOG_LEVEL='loud'"):
        Settings.from_env({"MAILSTREAM_LOG_LEVEL": "loud"})
