"""`mailstream topics create|list`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "topics",
        help="create the project's topics idempotently, or list their specs",
        description="Create every mailstream topic with explicit partitions and configs.",
    )
    parser.add_argument("action", choices=("create", "list"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mailstream.connectors.registry import PROVIDERS
    from mailstream.settings import Settings
    from mailstream.topics import create_topics, topic_specs

    settings = Settings.from_env()
    specs = topic_specs(settings, PROVIDERS)
    if args.action == "create":
        for name, created in create_topics(settings, specs).items():
            print(f"{'created' if created else 'exists '} {name}")
        return 0
    for spec in specs:
        configs = ", ".join(f"{key}={value}" for key, value in sorted(spec.configs.items()))
        print(f"{spec.name}  partitions={spec.partitions}  {configs}")
    return 0
