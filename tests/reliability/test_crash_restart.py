"""Crash and restart: a worker killed with SIGKILL at random points while it processes, and
started again, ends with exactly the state the offline twin computes: nothing lost, nothing
counted twice.

The stream is sent in rounds (every recipient gets one message a round), each round once the
previous one is fully processed and committed: a message's events share a raw partition, so
their order holds, and a recipient's messages of different rounds cannot overtake each other;
what a restarted worker knows of earlier rounds comes from the changelogs. A fifth of
the messages deliver their recipient-naming event last, so parked events are released too. The
kills land while the worker turns the round into canonical events (email.events) or into
states (email.recipient-state), at a seeded fraction of the round.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailstream.connectors.samples import campaign_rounds
from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.app import create_app
from mailstream.streams.reader import Watermarks
from mailstream.topics import TopicNames
from tests.integration.harness import send_envelopes
from tests.reliability.helpers import (
    Workers,
    expected_states,
    late_deliveries,
    wait_for_commits,
    wait_for_oracle,
)

pytestmark = pytest.mark.kafka

RECIPIENTS = 300
ROUNDS = 4
KILLS = 3


@dataclass(frozen=True, order=True)
class KillPoint:
    round: int  # 1..ROUNDS
    stage: str  # the output topic whose progress triggers the kill
    fraction: float  # of the round's records on that topic


def kill_schedule(seed: int, names: TopicNames) -> list[KillPoint]:
    rng = random.Random(seed)
    stages = (names.events, names.recipient_state)
    return sorted(
        KillPoint(round_index, rng.choice(stages), round(rng.uniform(0.05, 0.95), 2))
        for round_index in rng.sample(range(1, ROUNDS + 1), KILLS)
    )


def test_sigkill_at_random_points_loses_nothing_and_counts_nothing_twice(
    settings: Settings, names: TopicNames, workers: Workers, offsets: Watermarks, chaos_seed: int
) -> None:
    schedule = kill_schedule(chaos_seed, names)
    print("kill schedule:", schedule)
    rng = random.Random(chaos_seed)
    rounds = [late_deliveries(r, rng) for r in campaign_rounds(RECIPIENTS, ROUNDS, seed=chaos_seed)]
    workers.start("worker", settings)
    sent: list[dict] = []
    for index, envelopes in enumerate(rounds, start=1):
        before = {stage: offsets.total(stage) for stage in (names.events, names.recipient_state)}
        send_envelopes(settings, envelopes)
        sent.extend(envelopes)
        for point in (p for p in schedule if p.round == index):
            target = before[point.stage] + int(point.fraction * len(envelopes))
            reached = offsets.wait_for(
                point.stage, target, 60, lambda: workers.assert_alive("worker")
            )
            workers.kill("worker")
            print(
                f"killed in round {index} at {point.stage}="
                f"{reached - before[point.stage]} of ~{len(envelopes)}"
            )
            workers.start("worker", settings)
        context = f"round {index}, chaos seed {chaos_seed}, kills {schedule}"
        wait_for_oracle(settings, expected_states(sent), 120, context, workers.log_tails)
        if index < ROUNDS:
            wait_for_commits(settings, 30, lambda: workers.assert_alive("worker"))
    workers.assert_alive("worker")


def test_a_worker_restarted_on_a_backlog_commits_what_it_processed(
    settings: Settings, names: TopicNames, workers: Workers, chaos_seed: int
) -> None:
    """Each round waits, unread, until the worker (killed after the previous round) starts on
    it: the fetcher then has records as soon as Faust resumes the stream partitions, the moment
    streams/transport.py guards. Faust's own seek there made a restarted worker process the
    backlog yet commit about one offset per commit interval."""
    sent: list[dict] = []
    for index, envelopes in enumerate(campaign_rounds(RECIPIENTS, 3, seed=chaos_seed), start=1):
        send_envelopes(settings, envelopes)
        sent.extend(envelopes)
        workers.start("worker", settings)
        wait_for_oracle(
            settings,
            expected_states(sent),
            120,
            f"round {index}, chaos seed {chaos_seed}",
            workers.log_tails,
        )
        wait_for_commits(settings, 30, lambda: workers.assert_alive("worker"))
        workers.kill("worker")


def test_every_agent_runs_at_concurrency_1(tmp_path: Path) -> None:
    """faust-streaming issue 606: with concurrency above 1 an agent can commit an offset past an
    event still being processed, which a crash then loses."""
    app = create_app(Settings(data_dir=tmp_path), default_policy(), web_enabled=False)
    concurrency = {name: agent.concurrency for name, agent in app.agents.items()}
    assert concurrency and set(concurrency.values()) == {1}, concurrency
