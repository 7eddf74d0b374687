"""`mailstream kafka up|down|status|purge|fetch` and `mailstream registry up|down|status|fetch`:
the local broker and the local schema registry from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from mailstream.dev.broker import LocalBroker, cache_dir, ensure_jars
from mailstream.dev.schema_registry import LocalRegistry, ensure_application


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "kafka",
        help="run a local single-node Kafka broker (KRaft) from Maven Central jars",
        description="Start, stop or inspect a local Apache Kafka broker bound to 127.0.0.1; "
        "`fetch` only resolves its jars from Maven Central into the cache.",
    )
    parser.add_argument("action", choices=("up", "down", "status", "purge", "fetch"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=cache_dir() / "broker",
        help="broker directory: config, data, logs, pid (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    parser.set_defaults(handler=run)
    registry = subparsers.add_parser(
        "registry",
        help="run a local schema registry (Apicurio, Confluent-compatible API) from Maven Central",
        description="Start, stop or inspect a local schema registry bound to 127.0.0.1 (Apicurio "
        "Registry, in-memory storage, its Confluent-compatible API); `fetch` only builds it "
        "from Maven Central into the cache.",
    )
    registry.add_argument("action", choices=("up", "down", "status", "fetch"))
    registry.add_argument(
        "--dir",
        type=Path,
        default=cache_dir() / "registry",
        help="registry directory: port, pid, log (default: %(default)s)",
    )
    registry.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    registry.set_defaults(handler=run_registry)


def run_registry(args: argparse.Namespace) -> int:
    """A RegistryError is reported by mailstream.cli.main: one line on stderr, status 1."""
    registry = LocalRegistry(args.dir)
    if args.action == "fetch":
        print(f"schema registry in {ensure_application().parent}")
    elif args.action == "up":
        print(f"export MAILSTREAM_SCHEMA_REGISTRY_URL={registry.start(timeout=args.timeout)}")
        print(f"# registry log: {registry.log_file}")
    elif args.action == "down":
        registry.stop()
        print("stopped")
    else:
        pid = registry.pid()
        if pid is None:
            print("down")
            return 1
        print(f"up pid={pid} url={registry.url}")
    return 0


def run(args: argparse.Namespace) -> int:
    """A BrokerError is reported by mailstream.cli.main: one line on stderr, status 1."""
    broker = LocalBroker(args.dir)
    if args.action == "fetch":
        print(f"Kafka jars in {ensure_jars()}")
    elif args.action == "up":
        bootstrap = broker.start(timeout=args.timeout)
        print(f"export MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        print(f"# broker log: {broker.log_file}")
    elif args.action == "down":
        broker.stop()
        print("stopped")
    elif args.action == "purge":
        broker.purge()
        print(f"stopped and removed {args.dir}")
    else:
        pid = broker.pid()
        if pid is None:
            print("down")
            return 1
        print(f"up pid={pid} bootstrap={broker.bootstrap_servers}")
    return 0
