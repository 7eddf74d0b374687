"""The inactivity sweep: a periodic timer that publishes the score reset of recipients with no
human signal for `inactivity_reset_days` by wall clock, so downstream sees it without waiting
for the recipient's next event. It sends RESET_INACTIVE commands (deterministic ids, so two
sweeps before the first is applied reset once) and the state agent applies them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import faust
from faust.types import TableT, TopicT

from mailstream.codec import AvroCodec
from mailstream.commands import CommandAction, OperatorCommand
from mailstream.policy import Policy
from mailstream.recipient import reset_if_inactive
from mailstream.streams.recipients import recipient_records
from mailstream.timeline import state_of

SWEEP_ACTOR = "sweep"


def due_resets(
    records: Iterable[Mapping[str, Any]], now: int, policy: Policy
) -> Iterator[OperatorCommand]:
    for record in records:
        state = state_of(record)
        if reset_if_inactive(state, now, policy) is not state:
            yield OperatorCommand(
                action=CommandAction.RESET_INACTIVE,
                recipient=state.recipient,
                actor=SWEEP_ACTOR,
                requested_at=now,
                command_id=f"sweep:{state.recipient}:{state.last_signal_at}",
            )


def add_inactivity_sweep(
    app: faust.App,
    recipients: TableT[bytes, dict[str, Any]],
    commands: TopicT,
    codec: AvroCodec,
    policy: Policy,
    interval_seconds: float,
) -> None:
    @app.timer(interval=interval_seconds, name="inactivity_sweep")  # type: ignore[untyped-decorator]
    async def sweep() -> None:
        now = int(time.time() * 1000)
        for number, command in enumerate(
            due_resets(list(recipient_records(recipients)), now, policy)
        ):
            await commands.send(
                key=command.recipient.encode(), value=codec.encode(command.to_record())
            )
            if number % 1000 == 999:
                await asyncio.sleep(0)  # let the agents run during a long sweep
