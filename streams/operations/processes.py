"""Running mailstream services as subprocesses (the demo, tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def service(
    arguments: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`mailstream ARGUMENTS...` in its own process group, output to `log`; stopped on exit."""
    with open(log, "ab") as output:
        process = subprocess.Popen(  # noqa: S603 - this interpreter running mailstream itself
            [sys.executable, "-m", "mailstream", *arguments],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout`: a hung Faust worker must not outlive its caller."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def settings_env(settings: object, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make a subprocess read the same `Settings`."""
    from mailstream.settings import Settings

    if not isinstance(settings, Settings):
        raise TypeError(f"expected Settings, got {type(settings).__name__}")
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "MAILSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "MAILSTREAM_PARTITIONS": str(settings.partitions),
            "MAILSTREAM_REPLICATION_FACTOR": str(settings.replication_factor),
            "MAILSTREAM_APP_ID": settings.app_id,
            "MAILSTREAM_STORE": settings.store,
            "MAILSTREAM_DATA_DIR": str(settings.data_dir),
            "MAILSTREAM_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
            "MAILSTREAM_PRODUCER_LINGER_MS": str(settings.producer_linger_ms),
            "MAILSTREAM_CONSUMER_FETCH_MAX_WAIT_MS": str(settings.consumer_fetch_max_wait_ms),
            "MAILSTREAM_RAW_RETENTION_MS": str(settings.raw_retention_ms),
        }
    )
    env.update(settings.ingest.to_env())
    env.update(settings.schema_registry.to_env())
    if settings.log_level is not None:
        env["MAILSTREAM_LOG_LEVEL"] = settings.log_level
    env["MAILSTREAM_LOG_FORMAT"] = settings.log_format
    if settings.web_token is not None:
        env["MAILSTREAM_WEB_TOKEN"] = settings.web_token
    if settings.erasure_key is not None:
        env["MAILSTREAM_ERASURE_KEY"] = settings.erasure_key
    if settings.policy_file is not None:
        env["MAILSTREAM_POLICY_FILE"] = str(settings.policy_file)
    return env
