"""The worker's two processors built from settings, Faust-free: one construction for the
Faust app, the benchmarks' plain loops and the offline checks."""

from __future__ import annotations

from dataclasses import dataclass

from mailstream.codec import codec_for
from mailstream.connectors.registry import PROVIDERS
from mailstream.policy import Policy
from mailstream.settings import Settings
from mailstream.streams.normalize import Normalizer
from mailstream.streams.recipients import StateKeeper
from mailstream.topics import TopicNames


@dataclass(frozen=True)
class Processors:
    normalizer: Normalizer  # raw webhooks -> canonical events
    keeper: StateKeeper  # canonical events and operator commands -> recipient state


def build_processors(settings: Settings, policy: Policy) -> Processors:
    names = TopicNames(settings.topic_prefix)
    registry = settings.schema_registry_url
    event_codec = codec_for("email_event", registry)
    dead_letter_codec = codec_for("dead_letter", registry)
    normalizer = Normalizer(
        names,
        {names.raw(provider): provider for provider in PROVIDERS},
        policy,
        event_codec,
        dead_letter_codec,
    )
    keeper = StateKeeper(
        names,
        policy,
        event_codec,
        codec_for("recipient_state", registry),
        codec_for("suppression", registry),
        codec_for("operator_command", registry),
        dead_letter_codec,
        settings.partitions,
    )
    return Processors(normalizer, keeper)
