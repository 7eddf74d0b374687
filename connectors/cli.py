"""`mailstream normalize`: print a webhook body's canonical events as JSON lines."""

from __future__ import annotations

import argparse
import sys

from mailstream.connectors.registry import PROVIDERS, parse
from mailstream.errors import ParseError
from mailstream.events import render_json_line

BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "normalize",
        help="print a provider webhook body as canonical events (JSON lines)",
        description="Parse one webhook body (a JSON object or an array of them) and print "
        "each canonical event as a JSON line: Avro field names, enum symbols, timestamps as "
        "ISO 8601 UTC. Exit status 2 and the reason on stderr for input that cannot be parsed.",
    )
    parser.add_argument(
        "--provider", required=True, metavar="NAME", help=f"one of: {', '.join(PROVIDERS)}"
    )
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="webhook body; '-' for stdin"
    )
    parser.set_defaults(handler=normalize_command)


def normalize_command(args: argparse.Namespace) -> int:
    try:
        body = _read_body(args.file)
        events = parse(args.provider, body)
    except OSError as exc:
        print(f"mailstream normalize: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return BAD_INPUT
    except ParseError as exc:
        print(f"mailstream normalize: {exc.kind}: {exc.message}", file=sys.stderr)
        return BAD_INPUT
    sys.stdout.writelines(f"{render_json_line(event)}\n" for event in events)
    return 0


def _read_body(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as body:
        return body.read()
