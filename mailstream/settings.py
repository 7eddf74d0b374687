"""One typed place for configuration: environment variables prefixed `MAILSTREAM_`.

Every Kafka client of the project (faust worker, confluent-kafka producers, consumers and
the admin client) is configured from `KafkaSettings`, so a shared platform bus with SASL_SSL
or mutual TLS needs its credentials set once. Secrets never appear in `repr()` or logs.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from mailstream.errors import ErrorKind, MailstreamError

ENV_PREFIX = "MAILSTREAM_"
KAFKA_LOGGER = "mailstream.kafka"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SettingsError(MailstreamError, ValueError):
    """A configuration value is missing or malformed; the message names the variable."""

    default_kind = ErrorKind.INVALID_SETTING


def _secret() -> Any:
    return field(default=None, repr=False)


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings shared by every Kafka client.

    | variable | default |
    |---|---|
    | MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS) | 127.0.0.1:9092 |
    | MAILSTREAM_KAFKA_SECURITY_PROTOCOL | PLAINTEXT (SSL, SASL_PLAINTEXT, SASL_SSL) |
    | MAILSTREAM_KAFKA_SASL_MECHANISM | PLAIN when a SASL protocol is set (SCRAM-SHA-256/512) |
    | MAILSTREAM_KAFKA_SASL_USERNAME / _SASL_PASSWORD | unset |
    | MAILSTREAM_KAFKA_SSL_CA_FILE | system trust store |
    | MAILSTREAM_KAFKA_SSL_CERT_FILE / _SSL_KEY_FILE / _SSL_KEY_PASSWORD | unset (mutual TLS) |
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = _secret()
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: str | None = _secret()

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}: "
                f"expected one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                object.__setattr__(self, "sasl_mechanism", "PLAIN")
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"{ENV_PREFIX}KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: "
                    f"expected one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise SettingsError(
                    f"{self.security_protocol} needs {ENV_PREFIX}KAFKA_SASL_USERNAME "
                    f"and {ENV_PREFIX}KAFKA_SASL_PASSWORD"
                )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise SettingsError(
                f"mutual TLS needs both {ENV_PREFIX}KAFKA_SSL_CERT_FILE and "
                f"{ENV_PREFIX}KAFKA_SSL_KEY_FILE"
            )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def librdkafka_config(self) -> dict[str, Any]:
        """The connection part of a confluent-kafka Producer/Consumer/AdminClient config.
        librdkafka's own log lines go to the `mailstream.kafka` logger (not straight to
        stderr): the services show them through their logging set-up, the one-shot commands
        report failures in one line of their own (mailstream/cli.py)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
        if self.uses_sasl:
            config["sasl.mechanism"] = str(self.sasl_mechanism)
            config["sasl.username"] = str(self.sasl_username)
            config["sasl.password"] = str(self.sasl_password)
        if self.ssl_ca_file is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_file)
        if self.ssl_cert_file is not None and self.ssl_key_file is not None:
            config["ssl.certificate.location"] = str(self.ssl_cert_file)
            config["ssl.key.location"] = str(self.ssl_key_file)
            if self.ssl_key_password is not None:
                config["ssl.key.password"] = self.ssl_key_password
        return config

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_ca_file) if self.ssl_ca_file else None
        )
        if self.ssl_cert_file is not None and self.ssl_key_file is not None:
            context.load_cert_chain(
                str(self.ssl_cert_file), str(self.ssl_key_file), self.ssl_key_password
            )
        return context

    def faust_broker_options(self) -> dict[str, Any]:
        """`broker` and `broker_credentials` for `faust.App` (aiokafka underneath)."""
        import faust

        options: dict[str, Any] = {
            "broker": ";".join(f"kafka://{host}" for host in self.bootstrap_servers.split(","))
        }
        context = self.ssl_context()
        if self.uses_sasl:
            options["broker_credentials"] = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            options["broker_credentials"] = faust.SSLCredentials(context)
        return options


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """The schema registry (Confluent wire format), read from `MAILSTREAM_SCHEMA_REGISTRY_*`.
    Without a URL the services use Avro single-object encoding and no registry.

    | variable | default | meaning |
    |---|---|---|
    | MAILSTREAM_SCHEMA_REGISTRY_URL | unset | the registry's Confluent-compatible API |
    | ..._BASIC_AUTH | unset | `user:password` (Confluent Cloud: key:secret) |
    | ..._BEARER_TOKEN | unset | sent as `Authorization: Bearer <token>` |
    | ..._CA_FILE | system trust | CA bundle for an https registry |
    | ..._AUTO_REGISTER | true | false: only look up (`mailstream schemas register` registers) |
    | ..._STARTUP_TIMEOUT_SECONDS | 120 | how long an unreachable registry is retried at start |

    Subjects are the topic prefix and the record's full name (`staging.mailstream.v1.Suppression`),
    so environments sharing a registry never share subjects; each gets BACKWARD compatibility.
    """

    url: str | None = None
    basic_auth: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    auto_register: bool = True
    startup_timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise SettingsError(f"{ENV_PREFIX}SCHEMA_REGISTRY_BASIC_AUTH: expected user:password")
        if self.basic_auth is not None and self.bearer_token is not None:
            raise SettingsError(
                f"{ENV_PREFIX}SCHEMA_REGISTRY_BASIC_AUTH and _BEARER_TOKEN: configure one"
            )
        if self.startup_timeout_seconds < 0:
            raise SettingsError(
                f"{ENV_PREFIX}SCHEMA_REGISTRY_STARTUP_TIMEOUT_SECONDS: expected >= 0"
            )

    def to_env(self) -> dict[str, str]:
        """The variables `Settings.from_env` reads back as these settings."""
        return _fields_env(self, SchemaRegistrySettings(), ENV_PREFIX + "SCHEMA_REGISTRY_")

    def client_config(self) -> dict[str, Any]:
        """confluent-kafka's SchemaRegistryClient configuration."""
        config: dict[str, Any] = {"url": self.url}
        if self.basic_auth is not None:
            config["basic.auth.user.info"] = self.basic_auth
        if self.bearer_token is not None:
            token = self.bearer_token
            # STATIC_TOKEN would need a Confluent Cloud logical cluster; any registry takes this.
            config |= {
                "bearer.auth.credentials.source": "CUSTOM",
                "bearer.auth.custom.provider.function": lambda _config: {
                    "bearer.auth.token": token,
                    "bearer.auth.logical.cluster": "",
                },
                "bearer.auth.custom.provider.config": {},
            }
        if self.ca_file is not None:
            config["ssl.ca.location"] = str(self.ca_file)
        return config


@dataclass(frozen=True)
class Settings:
    """Everything the services read at start-up.

    | variable | default | meaning |
    |---|---|---|
    | MAILSTREAM_TOPIC_PREFIX | "" | prepended to every topic name (e.g. `staging.`) |
    | MAILSTREAM_PARTITIONS | 4 | partitions of the topics `mailstream topics create` makes |
    | MAILSTREAM_REPLICATION_FACTOR | 1 | their replication factor (3 on a production bus) |
    | MAILSTREAM_APP_ID | mailstream | Faust application id (consumer group, changelog names) |
    | MAILSTREAM_STORE | memory:// | Faust table store; rocksdb:// keeps tables on disk |
    | MAILSTREAM_DATA_DIR | ./var | worker data (RocksDB tables) |
    | MAILSTREAM_POLICY_FILE | unset | YAML overriding the default scoring/suppression policy |
    | MAILSTREAM_SCHEMA_REGISTRY_* | see `SchemaRegistrySettings` | Confluent wire format |
    | MAILSTREAM_WEB_HOST / MAILSTREAM_WEB_PORT | 127.0.0.1 / 6066 | worker web server |
    | MAILSTREAM_WEB_TOKEN | unset | when set, queries need `Authorization: Bearer <token>` |
    | MAILSTREAM_ERASURE_KEY | unset | secret keying the hash of erased addresses (erase) |
    | MAILSTREAM_RAW_RETENTION_MS | -1 | retention of the raw topics (topics create); -1: forever |
    | MAILSTREAM_SWEEP_INTERVAL_SECONDS | 3600 | inactivity sweep period; 0 disables it |
    | MAILSTREAM_PRODUCER_LINGER_MS | 10 | how long the worker's producer waits to fill a batch |
    | MAILSTREAM_CONSUMER_FETCH_MAX_WAIT_MS | 100 | longest the broker holds the worker's fetch |
    | MAILSTREAM_INGEST_* | see `IngestSettings` | webhook ingest: secrets, limits, dedupe |
    | MAILSTREAM_LOG_LEVEL | unset | DEBUG, INFO, WARNING or ERROR (worker WARNING, ingest INFO) |
    | MAILSTREAM_LOG_FORMAT | text | json: one JSON object per line (worker and ingest) |
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic_prefix: str = ""
    partitions: int = 4
    replication_factor: int = 1
    app_id: str = "mailstream"
    store: str = "memory://"
    data_dir: Path = Path("var")
    policy_file: Path | None = None
    schema_registry: SchemaRegistrySettings = field(default_factory=SchemaRegistrySettings)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_token: str | None = field(default=None, repr=False)
    erasure_key: str | None = _secret()
    raw_retention_ms: int = -1
    sweep_interval_seconds: int = 3600
    deliverability_interval_seconds: float = 5.0
    producer_linger_ms: int = 10
    consumer_fetch_max_wait_ms: int = 100
    log_level: str | None = None
    log_format: str = "text"
    ingest: IngestSettings = field(default_factory=lambda: IngestSettings())

    def __post_init__(self) -> None:
        if self.consumer_fetch_max_wait_ms < 0:
            raise SettingsError(
                f"{ENV_PREFIX}CONSUMER_FETCH_MAX_WAIT_MS={self.consumer_fetch_max_wait_ms}: "
                "expected a number of milliseconds, 0 or more"
            )
        if self.raw_retention_ms == 0 or self.raw_retention_ms < -1:
            raise SettingsError(
                f"{ENV_PREFIX}RAW_RETENTION_MS={self.raw_retention_ms}: expected -1 (forever) "
                "or a positive number of milliseconds"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"{ENV_PREFIX}LOG_FORMAT={self.log_format!r}: expected one of "
                f"{', '.join(LOG_FORMATS)}"
            )
        if self.log_level is not None and self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(
                f"{ENV_PREFIX}LOG_LEVEL={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}"
            )

    def service_log_level(self, default: str) -> str:
        """The log level a service runs at: MAILSTREAM_LOG_LEVEL, else the service's own."""
        return (self.log_level or default).upper()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        kafka_values = _read_fields(KafkaSettings, env, ENV_PREFIX + "KAFKA_")
        if "bootstrap_servers" not in kafka_values and env.get("KAFKA_BOOTSTRAP_SERVERS"):
            kafka_values["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        values = _read_fields(cls, env, ENV_PREFIX)
        registry = _read_fields(SchemaRegistrySettings, env, ENV_PREFIX + "SCHEMA_REGISTRY_")
        return cls(
            kafka=KafkaSettings(**kafka_values),
            schema_registry=SchemaRegistrySettings(**registry),
            ingest=IngestSettings.from_env(env),
            **values,
        )


def _read_fields(cls: type, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in fields(cls):
        name = prefix + spec.name.upper()
        raw = env.get(name)
        nested = str(spec.type).endswith("Settings") or str(spec.type).startswith("Mapping")
        if raw is None or raw == "" or nested:
            continue
        values[spec.name] = _convert(name, raw, str(spec.type))
    return values


def _convert(name: str, raw: str, type_name: str) -> Any:
    if type_name.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if type_name.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if type_name.startswith("bool"):
        if raw.lower() not in _BOOLEANS:
            raise SettingsError(f"{name}={raw!r}: expected true or false")
        return _BOOLEANS[raw.lower()]
    if type_name.startswith("tuple[tuple[str, str]"):
        return tuple(_split_pair(name, item) for item in _split_list(raw))
    if type_name.startswith("tuple[str"):
        return _split_list(raw)
    if type_name.startswith("Path"):
        return Path(raw)
    return raw


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _split_pair(name: str, item: str) -> tuple[str, str]:
    left, colon, right = item.partition(":")
    if not colon:
        raise SettingsError(f"{name}: expected comma-separated user:password entries")
    if not left:
        raise SettingsError(f"{name}: an entry has an empty user; expected user:password")
    if not right:
        raise SettingsError(f"{name}: the entry of user {left!r} has an empty password")
    return left, right


AuthMode = Literal["hmac", "api_key", "basic"]
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)


@dataclass(frozen=True, slots=True)
class ProviderAuth:
    """How one provider's webhooks are authenticated; read from
    `MAILSTREAM_INGEST_<PROVIDER>_<FIELD>` (see `IngestSettings`).

    secrets: accepted HMAC secrets (or API keys in api_key mode, or public keys where a
        provider signs with a key pair); several at once while a secret is rotated.
        allow_unsigned: accept requests presenting no credential (local testing, or while
        signing is rolled out); a credential that is presented is still checked when secrets
        are configured. signature_header / api_key_header: override
        the provider's header name. max_age_seconds: freshness window of timestamped
        signatures. mode: for providers that offer several schemes ("hmac", "api_key" or
        "basic"). basic_auth: accepted (username, password) pairs for mode "basic".
        signing_keys: private keys, for providers that sign with a key pair (ECDSA, say)
        and whose `secrets` are then the public verification keys; only `sign` reads them
        (tests, the demo, benchmarks), never `verify`, so the ingest needs none.
        sns_*: Amazon SNS deliveries (Amazon SES), signed by AWS with a certificate.
        sns_topic_arns: the only topics accepted (a topic of any AWS account is signed by AWS
        too). sns_certificate_files: PEM certificates trusted without fetching (read once).
        sns_fetch_certificates: fetch the message's SigningCertURL (https, sns.<region>.
        amazonaws.com only). sns_confirm_subscriptions: visit the SubscribeURL of a verified
        SubscriptionConfirmation (otherwise it is only logged).
    """

    secrets: tuple[str, ...] = field(default=(), repr=False)
    allow_unsigned: bool = False
    signature_header: str | None = None
    max_age_seconds: int = 300
    mode: AuthMode = "hmac"
    api_key_header: str | None = None
    basic_auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    signing_keys: tuple[str, ...] = field(default=(), repr=False)
    sns_topic_arns: tuple[str, ...] = ()
    sns_certificate_files: tuple[str, ...] = ()
    sns_fetch_certificates: bool = False
    sns_confirm_subscriptions: bool = False

    def __post_init__(self) -> None:
        secrets: object = self.secrets  # typed as a tuple; a caller may still pass one string
        if isinstance(secrets, str):
            raise SettingsError("secrets must be a tuple of strings, not one string")
        if self.mode not in AUTH_MODES:
            raise SettingsError(f"mode must be one of {', '.join(AUTH_MODES)}, not {self.mode!r}")
        if self.max_age_seconds <= 0:
            raise SettingsError("max_age_seconds must be positive")
        if any(not user or not password for user, password in self.basic_auth):
            raise SettingsError("every basic_auth entry needs a user and a password")


# Kafka record room beyond the body (IngestSettings.max_record_bytes).
RECORD_OVERHEAD_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024  # a longer "message id" is no message id: such a record gets no key

_AUTH_FIELDS = sorted((spec.name for spec in fields(ProviderAuth)), key=len, reverse=True)
_NO_AUTH = ProviderAuth()


@dataclass(frozen=True)
class IngestSettings:
    """The webhook ingest service (`mailstream ingest`). A provider without secrets is
    refused (401) unless its ALLOW_UNSIGNED is true. `<PROVIDER>` is any provider's registry
    name in upper case (MAILBOT, MAILEROO, INBOXROAD, ...); lists are comma-separated, several
    secrets are accepted at once for rotation.

    | variable | default | meaning |
    |---|---|---|
    | MAILSTREAM_INGEST_<PROVIDER>_SECRETS | unset | HMAC secrets (API keys in api_key mode) |
    | MAILSTREAM_INGEST_<PROVIDER>_ALLOW_UNSIGNED | false | accept requests without credential |
    | MAILSTREAM_INGEST_<PROVIDER>_SIGNATURE_HEADER | the provider's | its signature header |
    | MAILSTREAM_INGEST_<PROVIDER>_MAX_AGE_SECONDS | 300 | freshness window of signed timestamps |
    | MAILSTREAM_INGEST_<PROVIDER>_MODE | hmac | hmac, api_key or basic (Inboxroad offers all) |
    | MAILSTREAM_INGEST_<PROVIDER>_API_KEY_HEADER | the provider's | header carrying the API key |
    | MAILSTREAM_INGEST_<PROVIDER>_BASIC_AUTH | unset | user:password entries for mode basic |
    | MAILSTREAM_INGEST_<PROVIDER>_SIGNING_KEYS | unset | private keys, only for signing (tests) |
    | MAILSTREAM_INGEST_SES_SNS_TOPIC_ARNS | unset | accepted SNS topic ARNs (required) |
    | MAILSTREAM_INGEST_SES_SNS_CERTIFICATE_FILES | unset | trusted SNS signing certificates |
    | MAILSTREAM_INGEST_SES_SNS_FETCH_CERTIFICATES | false | fetch SigningCertURL from AWS |
    | MAILSTREAM_INGEST_SES_SNS_CONFIRM_SUBSCRIPTIONS | false | visit verified SubscribeURLs |
    | MAILSTREAM_INGEST_MAX_BODY_BYTES | 1048576 | larger bodies are answered 413 |
    | MAILSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS | 10 | Kafka write deadline, then 503 |
    | MAILSTREAM_INGEST_READ_TIMEOUT_SECONDS | 10 | for the request headers, then the body |
    | MAILSTREAM_INGEST_DEDUPE_WINDOW_SECONDS | 3600 | a stored body posted again: 200, no write |
    | MAILSTREAM_INGEST_DEDUPE_MAX_ENTRIES | 100000 | bodies remembered (~400 bytes each) |

    A dedupe window of 0 turns deduplication off. The raw topics and the ingest's producer
    take records of `max_record_bytes`: the body limit plus room for the key, the headers and
    Kafka's framing.
    """

    providers: Mapping[str, ProviderAuth] = field(default_factory=dict)
    max_body_bytes: int = 1024 * 1024
    produce_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 10.0
    dedupe_window_seconds: float = 3600.0
    dedupe_max_entries: int = 100_000

    def __post_init__(self) -> None:
        prefix = ENV_PREFIX + "INGEST_"
        positive = {
            "MAX_BODY_BYTES": self.max_body_bytes,
            "PRODUCE_TIMEOUT_SECONDS": self.produce_timeout_seconds,
            "READ_TIMEOUT_SECONDS": self.read_timeout_seconds,
            "DEDUPE_MAX_ENTRIES": self.dedupe_max_entries,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{prefix}{name}={value!r}: expected a positive number")
        if self.dedupe_window_seconds < 0:
            raise SettingsError(
                f"{prefix}DEDUPE_WINDOW_SECONDS={self.dedupe_window_seconds!r}: "
                "expected seconds (0 turns deduplication off)"
            )

    @property
    def max_record_bytes(self) -> int:
        """The largest Kafka record a webhook makes, compressed or not: the body, a key of at
        most MAX_KEY_BYTES, headers (the Content-Type is bounded by the HTTP server's 8190
        bytes per header), record and batch framing, and lz4's growth of a body that does not
        compress (at most 1/255 of it)."""
        return self.max_body_bytes + self.max_body_bytes // 128 + RECORD_OVERHEAD_BYTES

    def to_env(self) -> dict[str, str]:
        """The MAILSTREAM_INGEST_* variables `from_env` reads back as these settings (values
        left at their defaults are left out): what a parent hands an ingest process."""
        prefix = ENV_PREFIX + "INGEST_"
        env = _fields_env(self, IngestSettings(), prefix)
        for provider, auth in self.providers.items():
            env.update(_fields_env(auth, _NO_AUTH, f"{prefix}{provider.upper()}_"))
        return env

    def auth(self, provider: str) -> ProviderAuth:
        """The provider's configured authentication; the refusing default when unset."""
        return self.providers.get(provider, _NO_AUTH)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestSettings:
        prefix = ENV_PREFIX + "INGEST_"
        names: set[str] = set()
        for variable in env:
            if variable.startswith(prefix):
                rest = variable[len(prefix) :]
                for name in _AUTH_FIELDS:
                    suffix = "_" + name.upper()
                    if rest.endswith(suffix) and len(rest) > len(suffix):
                        names.add(rest[: -len(suffix)])
                        break
        providers = {
            name.lower(): _provider_auth(env, f"{prefix}{name}_") for name in sorted(names)
        }
        return cls(providers=providers, **_read_fields(cls, env, prefix))


def _fields_env(values: object, defaults: object, prefix: str) -> dict[str, str]:
    env = {}
    for spec in fields(values):  # type: ignore[arg-type]
        value = getattr(values, spec.name)
        if isinstance(value, Mapping) or value == getattr(defaults, spec.name):
            continue
        env[prefix + spec.name.upper()] = _env_text(prefix + spec.name.upper(), value)
    return env


def _env_text(name: str, value: object) -> str:
    """The inverse of `_convert`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        items = [":".join(item) if isinstance(item, tuple) else str(item) for item in value]
        if any("," in item or not item.strip() for item in items):
            raise SettingsError(f"{name}: an item that is empty or holds a comma cannot be listed")
        return ",".join(items)
    return str(value)


def _provider_auth(env: Mapping[str, str], prefix: str) -> ProviderAuth:
    values = _read_fields(ProviderAuth, env, prefix)
    if values.get("mode", "hmac") not in AUTH_MODES:
        raise SettingsError(
            f"{prefix}MODE={values['mode']!r}: expected one of {', '.join(AUTH_MODES)}"
        )
    if values.get("max_age_seconds", 1) <= 0:
        raise SettingsError(f"{prefix}MAX_AGE_SECONDS: expected a positive number of seconds")
    return ProviderAuth(**values)
