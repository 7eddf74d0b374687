"""The `mailstream` command: one entry point, one module per subcommand.

This is the composition root: it names modules of every layer (as strings, imported on use);
no other core module may. Each module named in COMMANDS has `register(subparsers)`, which adds
its parser and sets `handler=callable(args) -> int`. Heavy imports (faust, confluent_kafka)
happen inside the handlers, so `mailstream --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mailstream import __version__

COMMANDS: tuple[str, ...] = (
    "mailstream.dev.cli",
    "mailstream.streams.operations.topics",
    "mailstream.streams.simulate",
    "mailstream.streams.cli",
    "mailstream.dev.demo",
    "mailstream.streams.operations.suppress",
    "mailstream.streams.operations.replay",
    "mailstream.streams.operations.dead_letters",
    "mailstream.connectors.cli",
    "mailstream.connectors.ingest.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailstream",
        description="Email engagement and deliverability events on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
