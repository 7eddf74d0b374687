"""The worker's two processors built from settings, Faust-free: one construction for the
Faust app, the benchmarks' plain loops and the offline checks."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from mailstream.codec import service_codec
from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import Policy
from mailstream.settings import Settings
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.normalize import Normalizer
from mailstream.streams.recipients import StateKeeper
from mailstream.topics import TopicNames

# A full collection once the middle generation was collected this many times (Python: 10).
FULL_COLLECTION_AFTER = 100


@dataclass(frozen=True)
class Processors:
    normalizer: Normalizer  # raw webhooks -> canonical events
    keeper: StateKeeper  # canonical events and operator commands -> recipient state
    erased: ErasedAddresses  # both drop the records of these addresses; the keeper adds to it


def build_processors(settings: Settings, policy: Policy) -> Processors:
    names = TopicNames(settings.topic_prefix)
    event_codec = service_codec(settings, "email_event")
    dead_letter_codec = service_codec(settings, "dead_letter")
    erased = ErasedAddresses(settings.erasure_key)
    normalizer = Normalizer(
        names,
        {names.raw(provider): provider for provider in PROVIDERS},
        policy,
        event_codec,
        dead_letter_codec,
        erased,
    )
    keeper = StateKeeper(
        names,
        policy,
        event_codec,
        service_codec(settings, "recipient_state"),
        service_codec(settings, "suppression"),
        service_codec(settings, "operator_command"),
        dead_letter_codec,
        service_codec(settings, "erasure"),
        erased,
        settings.partitions,
    )
    return Processors(normalizer, keeper, erased)


def collect_garbage_less() -> None:
    """For a process about to run the processors, once everything is imported and built.
    A full collection walks every tracked object, the tables' records among them; with
    Python's defaults the worker ran one about every 1.5 s, 150 ms each, 12% of its CPU
    (bench/e2e_bench.py, timed with gc.callbacks). What start-up made is frozen out of them,
    and they come ten times less often. They found almost nothing: the records' cycles die
    young (a few hundred objects collected per run)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
