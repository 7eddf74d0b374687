"""`mailstream suppress add|remove EMAIL`: manual suppression through the commands topic.

The command goes to the state agent (the recipients table's single writer), which publishes
the change on email.recipient-state, email.suppressions and email.suppressions.scoped with the
command id and actor in the record headers. `--tenant T` suppresses or lifts for that tenant
only (default: the global suppression, which holds for every tenant). The CLI waits for the
published state that carries the command's id and says what it shows for the scope changed
(and which tenants still suppress the recipient), or for the agent's refusal (a dead letter of
kind command_refused, e.g. lifting a COMPLAINT without --force).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from mailstream.codec import AvroCodec
    from mailstream.commands import OperatorCommand
    from mailstream.recipient import RecipientState
    from mailstream.topics import TopicNames

COMMAND_ID_HEADER = "mailstream.command_id"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "suppress",
        help="suppress a recipient by hand, or lift a suppression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="suppress EMAIL")
    add.add_argument("email")
    add.add_argument(
        "--reason", default="manual", help="manual (default), unsubscribe, complaint, ..."
    )
    add.add_argument("--note", help="why, for the next person who looks")
    add.add_argument("--force", action="store_true", help="replace a COMPLAINT suppression")
    remove = actions.add_parser("remove", help="lift the suppression of EMAIL")
    remove.add_argument("email")
    remove.add_argument("--force", action="store_true", help="needed to lift a COMPLAINT")
    for sub in (add, remove):
        sub.add_argument(
            "--tenant",
            help="only for this tenant (sending team); default: the global suppression",
        )
        sub.add_argument("--actor", help="who makes the change (default: user@host)")
        sub.add_argument(
            "--wait",
            type=float,
            default=30.0,
            help="seconds to wait for the worker (0: do not wait)",
        )
        sub.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mailstream.commands import (
        CommandAction,
        OperatorCommand,
        default_actor,
        normalize_address,
        parse_reason,
    )

    # a malformed address or reason raises CommandError (invalid_command): mailstream.cli.main
    # reports it with exit status 2, before anything is sent
    recipient = normalize_address(args.email)
    reason = parse_reason(args.reason) if args.action == "add" else None
    command = OperatorCommand(
        action=CommandAction.SUPPRESS if args.action == "add" else CommandAction.LIFT,
        recipient=recipient,
        actor=args.actor or default_actor(),
        requested_at=int(time.time() * 1000),
        reason=reason,
        note=getattr(args, "note", None),
        force=args.force,
        command_id=uuid.uuid4().hex,
        tenant=args.tenant or None,
    )
    return send_and_confirm(command, args.wait)


def send_and_confirm(command: OperatorCommand, wait: float) -> int:
    """Send `command` on email.commands (keyed by its recipient, on its partition) and wait
    up to `wait` seconds for the state agent's confirmation or refusal; the exit status.
    `mailstream erase` sends its command here too."""
    from confluent_kafka import Producer, TopicPartition

    from mailstream.codec import service_codec
    from mailstream.settings import Settings
    from mailstream.streams.reader import throwaway_consumer, watermark_offsets
    from mailstream.topics import TopicNames

    settings = Settings.from_env()
    names = TopicNames(settings.topic_prefix)
    config = settings.kafka.librdkafka_config()
    consumer = throwaway_consumer(settings, "suppress")
    try:
        # Watch from the current ends, set before sending, so the outcome cannot be missed.
        consumer.assign(
            [
                TopicPartition(
                    topic,
                    partition,
                    watermark_offsets(consumer, TopicPartition(topic, partition), 10)[1],
                )
                for topic in (names.recipient_state, names.dead_letters)
                for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ]
        )
        # murmur2 like Faust's producer: the command lands on the partition of the
        # recipient's events
        producer = Producer({**config, "enable.idempotence": True, "partitioner": "murmur2_random"})
        record = service_codec(settings, "operator_command").encode(command.to_record())
        producer.produce(
            names.commands,
            key=command.recipient.encode(),
            value=record,
            headers=[(COMMAND_ID_HEADER, command.command_id.encode())],
        )
        if producer.flush(30) != 0:
            print("mailstream suppress: Kafka did not acknowledge the command", file=sys.stderr)
            return 1
        print(f"command {command.command_id} sent: {command.action.value} {command.recipient}")
        dead_letters = service_codec(settings, "dead_letter")
        if wait <= 0:
            return 0
        states = service_codec(settings, "recipient_state")
        return _await_outcome(consumer, names, dead_letters, states, command, wait)
    finally:
        consumer.close()


def _await_outcome(
    consumer: Consumer,
    names: TopicNames,
    dead_letters: AvroCodec,
    states: AvroCodec,
    command: OperatorCommand,
    wait: float,
) -> int:
    from mailstream.recipient import RecipientState

    command_id = command.command_id
    marker = command_id.encode()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            if message.error() is not None:
                continue
            if message.topic() == names.dead_letters:
                dead = dead_letters.decode(message.value() or b"")
                if dead["headers"].get(COMMAND_ID_HEADER) == marker:
                    print(f"refused: {dead['error_message']}", file=sys.stderr)
                    return 1
            elif dict(message.headers() or ()).get(COMMAND_ID_HEADER) == marker:
                value = message.value()
                state = None if value is None else RecipientState.from_record(states.decode(value))
                print(f"confirmed: {command.recipient} is {_outcome(command, state)}")
                return 0
    print(
        f"no worker confirmed command {command_id} within {wait:.0f}s "
        "(is `mailstream worker` running?)",
        file=sys.stderr,
    )
    return 3


def _outcome(command: OperatorCommand, state: RecipientState | None) -> str:
    """What the published state says of the scope the command changed, and of the others."""
    if state is None:
        return "erased"
    tenant = command.tenant
    if tenant is None:
        said = "suppressed globally" if state.suppressed else "not suppressed globally"
    elif state.suppressed:
        said = f"suppressed globally (for tenant {tenant} too)"
    else:
        mailable = not state.suppressed_for(tenant)
        said = f"{'active' if mailable else 'suppressed'} for tenant {tenant}"
    others = sorted(
        name for name, view in state.tenants.items() if view.suppressed and name != tenant
    )
    if others:
        said += f"; suppressed for tenant(s) {', '.join(others)}"
    return said
