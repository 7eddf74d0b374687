"""An experimental variant of `mailstream worker` for the benchmarks: its agents take up to
BENCH_BATCH events at a time (`stream.take_events`, within 10 ms) and ack them after the batch
(Faust acks the whole batch when the loop body returns). Each event is processed with itself
as Faust's current event, so table writes go to the changelog partition of their own source
partition, as in the per-event agents; outputs go to Faust's producer as streams/app.py sends
them. It relies on Faust internals (`faust.streams._current_event`), which is why it is a
benchmark and not the shipped worker.

Run by bench/e2e_bench.py as `python bench/batched_worker.py` with the worker's environment.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.streams import _current_event

from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import Policy, load_policy
from mailstream.settings import Settings
from mailstream.streams.app import RecordTable, create_app, source_record
from mailstream.streams.processors import build_processors, collect_garbage_less
from mailstream.streams.records import Output, SourceRecord
from mailstream.topics import create_topics, topic_specs

BATCH_WITHIN_SECONDS = 0.01

Process = Callable[[SourceRecord], list[Output]]
Pending = Callable[[], list[Output]]


def batched_agent(
    app: faust.App, name: str, process: Process, batch: int, pending: Pending
) -> None:
    """Replace agent `name` of `app` by a batched one over the same topics; `pending` gives
    what the batch leaves to publish once (the state step's deliverability buckets)."""
    original = app.agents.pop(name)
    send = _direct_send(app)

    async def run(stream: faust.StreamT[Any]) -> None:
        # take_events is a method of faust.Stream that faust's StreamT does not declare
        batches = stream.take_events(batch, within=BATCH_WITHIN_SECONDS)  # type: ignore[attr-defined]
        async for events in batches:
            outputs: list[Output] = []
            for event in events:
                _current_event.set(weakref.ref(event))
                outputs.extend(process(source_record(event.message)))
            outputs.extend(pending())
            await send(outputs)

    run.__name__ = name
    app.agent(original.channel, name=name)(run)


def _direct_send(app: faust.App) -> Callable[[Sequence[Output]], Awaitable[None]]:
    async def send(outputs: Sequence[Output]) -> None:
        producer = app.producer
        for output in outputs:
            await producer.send(
                output.topic, output.key, output.value, None, None, list(output.headers) or None
            )

    return send


def processors(
    app: faust.App, settings: Settings, policy: Policy
) -> dict[str, tuple[Process, Pending]]:
    """The agents' per-record steps over the app's own tables, built as create_app builds
    them, with what each leaves to publish per batch."""
    built = build_processors(settings, policy)
    normalizer, keeper = built.normalizer, built.keeper
    messages = cast(RecordTable, app.tables["messages"])
    recipients = cast(RecordTable, app.tables["recipients"])
    return {
        "normalize": (lambda record: normalizer.process(record, messages), list),
        "state": (lambda record: keeper.process(record, recipients), keeper.take_bucket_snapshots),
    }


def main() -> None:
    settings = Settings.from_env()
    policy = load_policy(settings.policy_file)
    create_topics(settings, topic_specs(settings, PROVIDERS))
    app = create_app(settings, policy, web_enabled=False)
    batch = int(os.environ.get("BENCH_BATCH", "0"))
    if batch:
        for name, (process, pending) in processors(app, settings, policy).items():
            batched_agent(app, name, process, batch, pending)
    worker = faust.Worker(app, loglevel="warning")
    worker.spinner = None  # as `mailstream worker` does
    collect_garbage_less()
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
