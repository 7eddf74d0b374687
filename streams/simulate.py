"""`mailstream simulate FILE.jsonl [--policy FILE]`: the pipeline's offline twin.

Each line of the file is an envelope `{"provider": ..., "payload": <webhook body as a JSON
value or string>, "received_at": <optional ISO 8601 or epoch ms>}`. The envelopes go through
the same steps as the stream, without Kafka: the provider's parser, recipient resolution
(`messages.route`, in file order, as the stream resolves a message's recipient), then the
rules (`recipient.apply`) folded over each recipient's events in event-time order (occurred_at,
then received_at, then event id; `mailstream.timeline.fold`), the state the stream converges
to. So the output does not depend on the order of the envelopes in the file beyond the order
of each message's own webhooks. The final state of every recipient is printed as one JSON line
each, sorted by recipient. Users try a policy on their history with it; the tests compare the
real pipeline against `simulate()`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import orjson

from mailstream.connectors import registry
from mailstream.errors import ErrorKind, MailstreamError, ParseError, TimeFormatError
from mailstream.events import EmailEvent, render_json_line
from mailstream.messages import MessageInfo, message_key, route
from mailstream.policy import Policy, PolicyError, load_policy
from mailstream.recipient import TIMESTAMP_FIELDS, RecipientState
from mailstream.timeline import Entry, event_entry, fold
from mailstream.times import parse_instant_ms

ProblemReporter = Callable[[int, str], None]


class EnvelopeError(MailstreamError, ValueError):
    """An envelope without a provider or payload, or with an unreadable received_at."""

    default_kind = ErrorKind.INVALID_ENVELOPE


def simulate(
    envelopes: Iterable[Mapping[str, Any]],
    policy: Policy,
    on_problem: ProblemReporter | None = None,
) -> dict[str, RecipientState]:
    """The final state of every recipient after all `envelopes`, keyed by recipient: the rules
    folded over each recipient's events in event-time order (`mailstream.timeline.fold`), so the
    result does not depend on the order of the envelopes beyond the order of each message's own
    events (a message's recipient is resolved as the stream resolves it).

    `on_problem(index, reason)` hears of every envelope that cannot be parsed, every event
    the stream would dead-letter, and every event still waiting for its recipient at the end;
    `index` is the envelope's 0-based position.
    """
    report = on_problem or _ignore
    entries: dict[str, list[Entry]] = {}
    messages: dict[str, MessageInfo] = {}
    waiting_since: dict[str, int] = {}
    for index, envelope in enumerate(envelopes):
        try:
            events = parse_envelope(envelope)
        except EnvelopeError as exc:
            report(index, str(exc))
            continue
        except ParseError as exc:
            report(index, f"{exc.kind}: {exc.message}")
            continue
        for event in events:
            ready, dead = _route(event, messages, policy)
            for ready_event in ready:
                recipient = cast(str, ready_event["recipient"])  # route resolved it
                entries.setdefault(recipient, []).append(event_entry(ready_event, policy))
            for dead_event, reason in dead:
                report(index, f"event {dead_event['event_id']}: {reason}")
            if not ready and not dead:
                waiting_since.setdefault(event["event_id"], index)
    for info in messages.values():
        for event in info.pending:
            report(
                waiting_since[event["event_id"]],
                f"event {event['event_id']}: no event of message {event['message_id']} "
                "names its recipient",
            )
    return {recipient: fold(recipient, kept, policy) for recipient, kept in entries.items()}


def parse_envelope(envelope: Any) -> list[EmailEvent]:
    """The canonical events of one envelope (raises EnvelopeError or ParseError)."""
    if not isinstance(envelope, Mapping):
        raise EnvelopeError("expected a JSON object with provider and payload")
    provider = envelope.get("provider")
    if not isinstance(provider, str) or not provider:
        raise EnvelopeError("envelope without a provider name")
    if "payload" not in envelope:
        raise EnvelopeError("envelope without a payload")
    payload = envelope["payload"]
    body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    received_at = _epoch_ms(envelope.get("received_at"))
    return registry.parse(provider, body, received_at=received_at)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay webhook envelopes offline and print every recipient's final state",
        description="Run webhook envelopes (one JSON object a line: provider, payload, "
        "optional received_at) through parsing, recipient resolution and the rules folded in "
        "event-time order, without Kafka, and print the final state of every recipient as "
        "JSON lines.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.jsonl", help="one envelope per line")
    parser.add_argument(
        "--policy", type=Path, metavar="FILE", help="YAML overriding the default policy"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
        with args.file.open("rb") as lines:
            states = _simulate_lines(lines, policy, str(args.file))
    except PolicyError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{args.file}: cannot read: {exc.strerror or exc}")
    for recipient in sorted(states):
        print(render_state(states[recipient]))
    return 0


def render_state(state: RecipientState) -> str:
    """The published fields as a JSON line: enum symbols, ISO 8601 UTC timestamps."""
    return render_json_line(state.to_record(), TIMESTAMP_FIELDS)


def _simulate_lines(lines: IO[bytes], policy: Policy, source: str) -> dict[str, RecipientState]:
    line_numbers: list[int] = []  # of each envelope handed to simulate(), by position

    def warn(line_number: int, reason: str) -> None:
        print(f"{source}:{line_number}: {reason}", file=sys.stderr)

    def envelopes() -> Iterator[Any]:
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                envelope = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                warn(line_number, f"not a JSON envelope: {exc}")
                continue
            line_numbers.append(line_number)
            yield envelope

    return simulate(envelopes(), policy, lambda index, reason: warn(line_numbers[index], reason))


def _route(
    event: EmailEvent, messages: dict[str, MessageInfo], policy: Policy
) -> tuple[list[EmailEvent], list[tuple[EmailEvent, str]]]:
    """`messages.route` against an in-memory message table."""
    message_id = event.get("message_id")
    key = message_key(event["provider"], message_id) if message_id else ""
    info, ready, dead = route(event, messages.get(key) if key else None, policy)
    if info is not None:
        messages[key] = info
    return ready, dead


def _epoch_ms(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return parse_instant_ms(value)
        except TimeFormatError:
            pass
    raise EnvelopeError(f"received_at {value!r}: expected ISO 8601 or epoch milliseconds")


def _fail(reason: str) -> int:
    print(f"mailstream simulate: {reason}", file=sys.stderr)
    return 2


def _ignore(index: int, reason: str) -> None:
    """The default problem reporter: problems are left out silently."""
