"""Every command reports a failure the same way (mailstream/cli.py `main`): one line on stderr,
`mailstream <command>: <cause>`, exit status 2 for a configuration error and 1 for a runtime
failure, no traceback; and no command waits forever on a broker that does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from mailstream.cli import main
from mailstream.commands import CommandError
from mailstream.errors import MailstreamError, TimeFormatError
from mailstream.policy import PolicyError
from mailstream.settings import SettingsError
from mailstream.streams.operations import topics
from mailstream.streams.operations.replay import ReplayError
from mailstream.topics import AdminError

CLOSED_PORT = "127.0.0.1:1"  # nothing listens there: connections are refused at once
# Every deadline of these commands is at most 30 s (a librdkafka request timeout); 60 s leaves
# room for a loaded machine and still catches a wait without a bound.
BOUNDED_SECONDS = 60


def failing_with(error: BaseException) -> Callable[[object], int]:
    def handler(_: object) -> int:
        raise error

    return handler


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (
            SettingsError("MAILSTREAM_PARTITIONS='abc': expected an integer"),
            2,
            "mailstream topics create: MAILSTREAM_PARTITIONS='abc': expected an integer",
        ),
        (PolicyError("policy.yaml: unknown key 'x'"), 2, "policy.yaml: unknown key 'x'"),
        (CommandError("'x' is not an email address"), 2, "'x' is not an email address"),
        (TimeFormatError("'soon' is not a time"), 2, "'soon' is not a time"),
        (AdminError("topic t does not exist: run `mailstream topics create`"), 1, "topic t"),
        (ReplayError("no progress for 300 s"), 1, "no progress for 300 s"),
        (MailstreamError("anything else the project raises"), 1, "anything else"),
        (
            KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata")),
            1,
            f"Kafka: Failed to get metadata (no broker answered at {CLOSED_PORT})",
        ),
        (
            KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed")),
            1,
            "mailstream topics create: Kafka: not allowed",
        ),
        (TimeoutError("email.events: no record for 30 s"), 1, "timed out: email.events: no"),
        (PermissionError(13, "Permission denied", "var"), 1, "Permission denied: 'var'"),
        (ConnectionRefusedError(111, "Connection refused"), 1, "Connection refused"),
    ],
)
def test_a_failure_is_one_line_and_an_exit_status(
    error: Exception,
    status: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS", CLOSED_PORT)
    monkeypatch.setattr(topics, "run", failing_with(error))
    assert main(["topics", "create"]) == status
    stderr = capsys.readouterr().err
    assert stderr.startswith("mailstream topics create: ")
    assert line in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "run", failing_with(KeyboardInterrupt()))
    assert main(["topics", "create"]) == 130


def test_an_unexpected_error_is_a_bug_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "run", failing_with(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        main(["topics", "create"])


KAFKA_COMMANDS = [
    ["dlq", "list"],
    ["dlq", "redrive"],
    ["suppress", "add", "ann@example.com"],
    ["replay", "--yes"],
    ["topics", "create"],
    ["worker", "--without-web"],
]


def reported_as(command: list[str]) -> str:
    """How main names a command in its line: the command and its action, no options."""
    return " ".join(["mailstream", *(word for word in command[:2] if word.isalpha())])


@pytest.mark.parametrize("command", [*KAFKA_COMMANDS, ["ingest"]], ids=" ".join)
def test_a_malformed_setting_exits_2_naming_the_variable(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS", CLOSED_PORT)
    monkeypatch.setenv("MAILSTREAM_PARTITIONS", "abc")
    assert main(command) == 2
    stderr = capsys.readouterr().err
    assert stderr == f"{reported_as(command)}: MAILSTREAM_PARTITIONS='abc': expected an integer\n"


def test_a_bad_argument_exits_2_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "list", "--since", "last tuesday"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("mailstream dlq list: argument --since: 'last tuesday' is not a time")
    assert stderr.endswith("(see mailstream dlq list --help)\n") and stderr.count("\n") == 1

    assert main(["suppress", "add", "not-an-address"]) == 2
    assert capsys.readouterr().err == (
        "mailstream suppress add: 'not-an-address' is not an email address "
        "(expected local@domain.tld)\n"
    )


@dataclass(frozen=True)
class Outcome:
    command: list[str]
    status: int
    stderr: str
    seconds: float

    @property
    def own_lines(self) -> list[str]:
        """stderr without librdkafka's own log lines (`%3|<time>|FAIL|...`): the client writes
        those to the process's stderr itself while it retries the connection."""
        return [line for line in self.stderr.splitlines() if not line.startswith("%")]


def run_against_closed_port(command: list[str], workdir: Path) -> Outcome:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MAILSTREAM_") and name != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS=CLOSED_PORT, MAILSTREAM_DATA_DIR=str(workdir))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mailstream", *command],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=2 * BOUNDED_SECONDS,
        check=False,
    )
    return Outcome(command, result.returncode, result.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    """Every command that talks to Kafka, run at once against a port nobody listens on."""
    workdir = tmp_path_factory.mktemp("unreachable")
    with ThreadPoolExecutor(len(KAFKA_COMMANDS)) as pool:
        return list(
            pool.map(lambda command: run_against_closed_port(command, workdir), KAFKA_COMMANDS)
        )


def test_an_unreachable_broker_is_one_line_exit_1_in_bounded_time(
    unreachable: list[Outcome],
) -> None:
    for outcome in unreachable:
        assert outcome.status == 1, (outcome.command, outcome.status, outcome.stderr[-2000:])
        assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
        assert len(outcome.own_lines) == 1, outcome.own_lines
        line = outcome.own_lines[0]
        assert line.startswith(f"{reported_as(outcome.command)}: Kafka: "), line
        assert line.endswith(f"(no broker answered at {CLOSED_PORT})"), line
        assert outcome.seconds < BOUNDED_SECONDS, (outcome.command, outcome.seconds)


def test_an_unreachable_broker_prints_nothing_but_that_line(unreachable: list[Outcome]) -> None:
    for outcome in unreachable:
        assert outcome.stderr.count("\n") == 1, outcome.stderr[:500]
