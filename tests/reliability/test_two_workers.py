"""Two workers share the partitions (4 here); one is killed with SIGKILL while it processes, and
the other takes its partitions over with their state intact (rebuilt from the changelogs, or
from its own RocksDB files plus the changelogs), checked against the offline twin.

The rounds before the kill are processed and committed before the next is sent (a survivor
cannot rebuild them by reading the sources again: their state must come from the changelogs).
The kill lands
at a seeded point of round 2, or of round 1, before anything was committed: the survivor then
has to read the partitions it takes over from their start. Round 3 goes to the survivor alone,
so a recipient whose state it had not recovered would diverge from the oracle.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mailstream.connectors.registry import PROVIDERS
from mailstream.connectors.samples import campaign_rounds
from mailstream.settings import Settings
from mailstream.streams.reader import Watermarks
from mailstream.topics import TopicNames, create_topics, topic_specs
from tests.integration.harness import send_envelopes
from tests.reliability.helpers import (
    Workers,
    expected_states,
    wait_for_commits,
    wait_for_members,
    wait_for_oracle,
)

pytestmark = pytest.mark.kafka

RECIPIENTS = 200
ROUNDS = 3
WORKERS = ("a", "b")


@pytest.mark.parametrize("killed_round", [1, 2], ids=["before-first-commit", "after-commits"])
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_the_survivor_takes_over_with_the_state_intact(
    settings: Settings, workers: Workers, chaos_seed: int, store: str, killed_round: int
) -> None:
    settings = replace(settings, partitions=4, store=store)
    create_topics(settings, topic_specs(settings, PROVIDERS))
    names = TopicNames(settings.topic_prefix)
    rng = random.Random(chaos_seed)
    victim = rng.choice(WORKERS)
    survivor = next(name for name in WORKERS if name != victim)
    fraction = round(rng.uniform(0.1, 0.9), 2)
    print(f"kill worker {victim} at {fraction} of round {killed_round}'s states")

    def both_alive() -> None:
        for name in WORKERS:
            workers.assert_alive(name)

    for name in WORKERS:
        workers.start(name, settings)
    wait_for_members(settings, 2, 60, both_alive)
    sent: list[dict] = []
    with Watermarks(settings) as offsets:
        for index, envelopes in enumerate(
            campaign_rounds(RECIPIENTS, ROUNDS, seed=chaos_seed), start=1
        ):
            before = offsets.total(names.recipient_state)
            send_envelopes(settings, envelopes)
            sent.extend(envelopes)
            if index == killed_round:
                offsets.wait_for(
                    names.recipient_state, before + int(fraction * len(envelopes)), 60, both_alive
                )
                workers.kill(victim)
                [owned] = wait_for_members(
                    settings, 1, 60, lambda: workers.assert_alive(survivor)
                ).values()
                assert owns_every_source_partition(owned, settings, names)
            context = (
                f"round {index}, chaos seed {chaos_seed}, {victim} killed in round {killed_round}"
            )
            wait_for_oracle(settings, expected_states(sent), 120, context, workers.log_tails)
            if index < killed_round:
                wait_for_commits(settings, 30, both_alive)
    workers.assert_alive(survivor)


def owns_every_source_partition(
    owned: set[tuple[str, int]], settings: Settings, names: TopicNames
) -> bool:
    sources = [names.events, *(names.raw(provider) for provider in PROVIDERS)]
    return {(topic, p) for topic in sources for p in range(settings.partitions)} <= owned
