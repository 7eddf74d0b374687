"""Parse + encode throughput per core for each provider, and the cost of each step.

Workload: every golden body in tests/payloads/<provider>/ (seed samples, every event type,
bounces and batches), parsed in turn. One process, one thread: the figures are per core.
Prints a markdown table. Run: .venv/bin/python bench/parse_bench.py
"""

from __future__ import annotations

import platform
import timeit
from collections.abc import Callable
from pathlib import Path

import fastavro
import orjson

from mailstream.codec import AvroCodec, codec_for
from mailstream.connectors.base import Provider
from mailstream.connectors.registry import PROVIDERS

PAYLOADS = Path(__file__).resolve().parent.parent / "tests" / "payloads"
REPEATS = 5


def seconds_per_run(run: Callable[[], object]) -> float:
    """Best time of one run, over REPEATS rounds of enough runs to last ~0.2 s each."""
    timer = timeit.Timer(run)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEATS, number=number)) / number


def bodies_of(provider: str) -> list[bytes]:
    return [
        path.read_bytes()
        for path in sorted((PAYLOADS / provider).glob("*.json"))
        if not path.name.endswith(".expected.json")
    ]


def bench_provider(provider: Provider, codec: AvroCodec) -> dict[str, float]:
    bodies = bodies_of(provider.name)
    events = [event for body in bodies for event in provider.parse(body)]
    encoded = [codec.encode(event) for event in events]

    def parse_and_encode() -> None:
        for body in bodies:
            for event in provider.parse(body):
                codec.encode(event)

    per_body = 1e6 / len(bodies)
    per_event = 1e6 / len(events)
    steps = {
        "bodies": len(bodies),
        "events": len(events),
        "orjson.loads µs/body": seconds_per_run(lambda: [orjson.loads(b) for b in bodies]),
        "message_key µs/body": seconds_per_run(lambda: [provider.message_key(b) for b in bodies]),
        "parse µs/event": seconds_per_run(lambda: [provider.parse(b) for b in bodies]),
        "encode µs/event": seconds_per_run(lambda: [codec.encode(e) for e in events]),
        "decode µs/event": seconds_per_run(lambda: [codec.decode(d) for d in encoded]),
        "parse+encode µs/event": seconds_per_run(parse_and_encode),
    }
    for name in steps:
        if "/body" in name:
            steps[name] *= per_body
        elif "/event" in name:
            steps[name] *= per_event
    steps["parse+encode events/s"] = 1e6 / steps["parse+encode µs/event"]
    return steps


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(rows.values())))
    lines = [
        "| provider | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for provider, steps in rows.items():
        cells = [
            f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:.2f}"
            for value in steps.values()
        ]
        lines.append(f"| {provider} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    codec = codec_for("email_event")  # single-object encoding, the default wire format
    rows = {name: bench_provider(provider, codec) for name, provider in sorted(PROVIDERS.items())}
    print(
        f"Python {platform.python_version()}, fastavro {fastavro.__version__}, "
        f"orjson {orjson.__version__}, {platform.machine()}; one core; best of {REPEATS}.\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
