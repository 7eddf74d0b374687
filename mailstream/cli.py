"""The `mailstream` command: one entry point, one module per subcommand.

This is the composition root: it names modules of every layer (as strings, imported on use);
no other core module may. Each module named in COMMANDS has `register(subparsers)`, which adds
its parser and sets `handler=callable(args) -> int`. Heavy imports (faust, confluent_kafka)
happen inside the handlers, so `mailstream --help` stays instant.

Failures are reported here, once for every command: one line on stderr naming the cause,
`mailstream <command>: <cause>`, and the exit status says whose move it is.

- 0: done.
- 1: a runtime failure: Kafka unreachable or refusing, a timeout, a file or socket error, a
  replay or redrive that failed (`MailstreamError` of any other kind, confluent-kafka's
  `KafkaException`, `TimeoutError`, `OSError`).
- 2: a configuration error: a malformed `MAILSTREAM_*` variable (`SettingsError`), an invalid
  policy (`PolicyError`), a bad argument (argparse's usage errors included).
- 130: interrupted (Ctrl-C).

Anything else raised is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from mailstream import __version__
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.settings import KAFKA_LOGGER

COMMANDS: tuple[str, ...] = (
    "mailstream.dev.cli",
    "mailstream.streams.operations.topics",
    "mailstream.streams.operations.schemas",
    "mailstream.streams.simulate",
    "mailstream.streams.cli",
    "mailstream.dev.demo",
    "mailstream.streams.operations.suppress",
    "mailstream.streams.operations.erase",
    "mailstream.streams.operations.replay",
    "mailstream.streams.operations.dead_letters",
    "mailstream.connectors.cli",
    "mailstream.connectors.ingest.cli",
)

RUNTIME_FAILURE = 1
CONFIGURATION_ERROR = 2
INTERRUPTED = 130

# The error kinds that mean the operator's input is wrong, not the world: exit status 2.
CONFIGURATION_KINDS: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.INVALID_SETTING,
        ErrorKind.INVALID_POLICY,
        ErrorKind.INVALID_TIME,
        ErrorKind.INVALID_COMMAND,
    }
)

# librdkafka's codes for "no broker answered": the line then says where it looked.
_UNREACHABLE_CODES = frozenset({"_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN", "_RESOLVE"})


class ArgumentParser(argparse.ArgumentParser):
    """argparse reporting a bad argument like every other failure: one line, exit status 2
    (argparse's own prints the usage first). Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(CONFIGURATION_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mailstream",
        description="Email engagement and deliverability events on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # librdkafka logs every refused connection; a command reports its failure in one line.
    # The services (worker, ingest) configure logging and show them all the same.
    logging.getLogger(KAFKA_LOGGER).addHandler(logging.NullHandler())
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as error:
        status = exit_status(error)
        if status is None:
            raise  # not a failure the project expects: a bug, keep its traceback
        sys.stdout.flush()
        print(f"{command_name(args)}: {cause(error)}", file=sys.stderr)
        return status


def exit_status(error: Exception) -> int | None:
    """2 for a configuration error, 1 for a runtime failure, None for anything unexpected."""
    if isinstance(error, MailstreamError):
        return CONFIGURATION_ERROR if error.kind in CONFIGURATION_KINDS else RUNTIME_FAILURE
    if isinstance(error, OSError) or _is_kafka_exception(error):  # TimeoutError is an OSError
        return RUNTIME_FAILURE
    return None


def cause(error: Exception) -> str:
    """What went wrong, in the words of the error, without its class name."""
    if isinstance(error, MailstreamError):
        return error.message
    if _is_kafka_exception(error):
        return _kafka_cause(error)
    if isinstance(error, TimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return str(error) or type(error).__name__


def command_name(args: argparse.Namespace) -> str:
    """`mailstream dlq list`: the command and, where it has one, its action."""
    action = getattr(args, "action", None)
    return " ".join(["mailstream", args.command, *([action] if isinstance(action, str) else [])])


def _is_kafka_exception(error: Exception) -> bool:
    if "confluent_kafka" not in sys.modules:  # nothing can have raised one
        return False
    from confluent_kafka import KafkaException

    return isinstance(error, KafkaException)


def _kafka_cause(error: Exception) -> str:
    from confluent_kafka import KafkaError

    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, KafkaError):
        return f"Kafka: {error}"
    reason = f"Kafka: {kafka_error.str()}"
    if kafka_error.name() in _UNREACHABLE_CODES:
        reason += f" (no broker answered at {_bootstrap_servers()})"
    return reason


def _bootstrap_servers() -> str:
    from mailstream.settings import Settings

    try:
        return Settings.from_env().kafka.bootstrap_servers
    except MailstreamError:
        return "MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS"


if __name__ == "__main__":
    sys.exit(main())
