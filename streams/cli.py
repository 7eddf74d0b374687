"""`mailstream worker`: the Faust worker running the pipeline."""

from __future__ import annotations

import argparse
import dataclasses


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the stream pipeline (normalize and state agents)",
        description="Run the Faust worker: raw topics to canonical events to recipient state. "
        "Creates missing topics first (idempotent).",
    )
    parser.add_argument("--web-host", help="bind the worker's web server (default 127.0.0.1)")
    parser.add_argument("--web-port", type=int, help="web server port (default 6066)")
    parser.add_argument("--without-web", action="store_true", help="do not start the web server")
    parser.add_argument(
        "--loglevel", help="log level (default: MAILSTREAM_LOG_LEVEL, else warning)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import faust

    from mailstream.connectors.registry import PROVIDERS
    from mailstream.logs import logging_config
    from mailstream.policy import load_policy
    from mailstream.settings import Settings
    from mailstream.streams.app import create_app
    from mailstream.streams.erasures import ErasedAddresses
    from mailstream.streams.processors import collect_garbage_less
    from mailstream.topics import create_topics, topic_specs

    settings = Settings.from_env()
    overrides = {"web_host": args.web_host, "web_port": args.web_port}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v})
    create_topics(settings, topic_specs(settings, PROVIDERS))
    if settings.erasure_key is None:
        ErasedAddresses(None).follow(settings)  # refuses while email.erasures holds erasures
    app = create_app(settings, load_policy(settings.policy_file), web_enabled=not args.without_web)
    level = args.loglevel or settings.service_log_level("warning")
    json_logs = logging_config(level.upper(), "json") if settings.log_format == "json" else None
    worker = faust.Worker(app, loglevel=level, logging_config=json_logs)
    # At WARNING and above Faust's terminal spinner sets the root logger to DEBUG so that every
    # log record spins it: every debug call of aiokafka and Faust then builds a LogRecord.
    worker.spinner = None
    collect_garbage_less()
    worker.execute_from_commandline()  # exits the process when the worker stops
