from __future__ import annotations

import http.server
import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from mailstream.logs import JsonFormatter
from mailstream.settings import KafkaSettings, SchemaRegistrySettings, Settings, SettingsError


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
        ({"MAILSTREAM_CONSUMER_FETCH_MAX_WAIT_MS": "-1"}, "CONSUMER_FETCH_MAX_WAIT_MS"),
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


REGISTRY_ENV = {
    "MAILSTREAM_SCHEMA_REGISTRY_URL": "https://registry.example:8081",
    "MAILSTREAM_SCHEMA_REGISTRY_BASIC_AUTH": "key:s3cret",
    "MAILSTREAM_SCHEMA_REGISTRY_CA_FILE": "/etc/ssl/registry-ca.pem",
    "MAILSTREAM_SCHEMA_REGISTRY_AUTO_REGISTER": "false",
    "MAILSTREAM_SCHEMA_REGISTRY_STARTUP_TIMEOUT_SECONDS": "30",
}


def test_schema_registry_settings_round_trip_and_hide_their_credentials() -> None:
    registry = Settings.from_env(REGISTRY_ENV).schema_registry
    assert registry == SchemaRegistrySettings(
        url="https://registry.example:8081",
        basic_auth="key:s3cret",
        ca_file=Path("/etc/ssl/registry-ca.pem"),
        auto_register=False,
        startup_timeout_seconds=30.0,
    )
    assert Settings.from_env(registry.to_env()).schema_registry == registry
    assert "s3cret" not in repr(registry)
    assert registry.client_config() == {
        "url": "https://registry.example:8081",
        "basic.auth.user.info": "key:s3cret",
        "ssl.ca.location": "/etc/ssl/registry-ca.pem",
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILSTREAM_SCHEMA_REGISTRY_BASIC_AUTH": "no-colon"}, "BASIC_AUTH"),
        (
            {
                "MAILSTREAM_SCHEMA_REGISTRY_BASIC_AUTH": "a:b",
                "MAILSTREAM_SCHEMA_REGISTRY_BEARER_TOKEN": "t",
            },
            "configure one",
        ),
        ({"MAILSTREAM_SCHEMA_REGISTRY_AUTO_REGISTER": "perhaps"}, "AUTO_REGISTER"),
    ],
)
def test_bad_schema_registry_settings_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("settings", "authorization"),
    [
        (SchemaRegistrySettings(basic_auth="key:s3cret"), "Basic a2V5OnMzY3JldA=="),
        (SchemaRegistrySettings(bearer_token="t0ken"), "Bearer t0ken"),
    ],
)
def test_the_registry_client_sends_the_configured_credentials(
    settings: SchemaRegistrySettings, authorization: str
) -> None:
    """A loopback HTTP server stands in for the registry: only the header is under test."""
    seen: list[str | None] = []

    class Subjects(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Subjects) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = replace(settings, url=url).client_config()
        with SchemaRegistryClient(config) as client:
            assert client.get_subjects() == []
        server.shutdown()
    assert seen == [authorization]


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"MAILSTREAM_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="MAILSTREAM_LOG_FORMAT='xml'"):
        Settings.from_env({"MAILSTREAM_LOG_FORMAT": "xml"})


def test_json_log_lines_carry_the_record_and_its_exception() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord(
            "mailstream.ingest", logging.ERROR, __file__, 1, "request %s failed", ("r-1",), None
        )
        record.exc_info = sys.exc_info()
    entry = orjson.loads(formatter.format(record))
    assert {k: entry[k] for k in ("level", "logger", "message")} == {
        "level": "ERROR",
        "logger": "mailstream.ingest",
        "message": "request r-1 failed",
    }
    assert "ValueError: broken" in entry["exception"]
    assert entry["time"].endswith("+00:00")
