"""`mailstream ingest [--host 127.0.0.1] [--port 8080]`: serve the webhook endpoints.

SIGTERM or SIGINT closes the listener, lets the requests in flight get their Kafka
acknowledgement (up to the produce timeout), flushes the producer and exits 0.
"""

from __future__ import annotations

import argparse
import logging.config
import sys

from mailstream.logs import logging_config

SHUTDOWN_GRACE_SECONDS = 1.0  # beyond the produce timeout, for the last answers to be written


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="serve POST /webhooks/{provider} and land the bodies on the raw topics",
        description="The webhook ingest service: verifies provider signatures, stores each "
        "body unchanged on email.raw.<provider> and answers 200 once Kafka confirmed it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from mailstream.connectors.ingest.app import create_app
    from mailstream.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        level = settings.service_log_level("info")
        logging.config.dictConfig(logging_config(level, settings.log_format))
        app = create_app(settings)
    except SettingsError as error:  # names the variable; a traceback would add nothing
        print(f"mailstream ingest: {error.message}", file=sys.stderr)
        return 2
    web.run_app(  # handles SIGTERM/SIGINT: the graceful shutdown described above
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=logging.getLogger("mailstream.ingest").info,
        shutdown_timeout=settings.ingest.produce_timeout_seconds + SHUTDOWN_GRACE_SECONDS,
    )
    return 0
