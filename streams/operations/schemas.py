"""`mailstream schemas register|check`: the project's Avro schemas in the schema registry, for a
deploy pipeline that runs the services with `MAILSTREAM_SCHEMA_REGISTRY_AUTO_REGISTER=false`.

`check` asks the registry whether each schema may be registered (compatible with the latest
version under its subject, or a new subject) and changes nothing; `register` registers them
and keeps each subject BACKWARD-compatible. Either exits 1 when the registry refuses a schema.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schemas",
        help="register the Avro schemas in the schema registry, or check that it would take them",
        description=__doc__,
    )
    parser.add_argument("action", choices=("register", "check"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from mailstream import codec
    from mailstream.errors import ErrorKind, MailstreamError
    from mailstream.schemas import load_schema, schema_names
    from mailstream.settings import Settings
    from mailstream.text import render_table

    settings = Settings.from_env()
    if settings.schema_registry.url is None:
        raise MailstreamError(
            "no schema registry configured: set MAILSTREAM_SCHEMA_REGISTRY_URL",
            ErrorKind.INVALID_SETTING,
        )
    client = codec.registry_client(settings.schema_registry)
    rows: list[list[str]] = []
    refused = 0
    for name in schema_names():
        schema, subject = load_schema(name), codec.subject_of(settings, name)
        try:
            if args.action == "register":
                outcome = f"id {codec.register(client, subject, schema)}"
            elif subject not in client.get_subjects():
                outcome = "new subject"
            elif client.test_compatibility(subject, Schema(json.dumps(schema), "AVRO")):
                outcome = "compatible"
            else:
                outcome = "INCOMPATIBLE with the latest version"
                refused += 1
        except SchemaRegistryError as error:
            outcome = f"REFUSED: {error.error_message}"
            refused += 1
        rows.append([subject, name, outcome])
    print(render_table(("subject", "schema", "outcome"), rows))
    return 1 if refused else 0
