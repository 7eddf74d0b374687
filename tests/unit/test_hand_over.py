"""The consumer steps Faust's record hand-over by hand and, only when it waits, lets `resumed`
go on with it as an asyncio task would (streams/transport.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from mailstream.streams.transport import resumed


def stepped(coroutine: Coroutine[Any, Any, None]) -> Any:
    """What the coroutine waits on after its first step (it must wait)."""
    return coroutine.send(None)


async def test_a_hand_over_that_waits_for_room_goes_on_once_there_is_room() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    handing_over = queue.put("second")
    going_on = asyncio.ensure_future(resumed(handing_over, stepped(handing_over)))
    await asyncio.sleep(0)
    assert not going_on.done()
    assert queue.get_nowait() == "first"
    await asyncio.wait_for(going_on, 1)
    assert queue.get_nowait() == "second"


async def test_the_outcome_of_what_it_waits_on_is_the_coroutine_s() -> None:
    loop = asyncio.get_running_loop()
    waited: asyncio.Future[int] = loop.create_future()
    seen: list[object] = []

    async def hand_over() -> None:
        try:
            seen.append(await waited)
        except LookupError as error:
            seen.append(error)
            raise

    handing_over = hand_over()
    going_on = asyncio.ensure_future(resumed(handing_over, stepped(handing_over)))
    waited.set_exception(LookupError("no such channel"))
    with pytest.raises(LookupError):
        await going_on
    assert [type(item) for item in seen] == [LookupError]


async def test_bare_yields_and_several_waits_are_gone_through() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()
    results: list[int] = []

    async def hand_over() -> None:
        results.append(await first)
        await asyncio.sleep(0)
        results.append(await second)

    handing_over = hand_over()
    going_on = asyncio.ensure_future(resumed(handing_over, stepped(handing_over)))
    first.set_result(1)
    for _ in range(3):
        await asyncio.sleep(0)
    assert results == [1]
    second.set_result(2)
    await asyncio.wait_for(going_on, 1)
    assert results == [1, 2]


async def test_cancelled_it_cancels_the_wait_inside_the_coroutine() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    cancelled_inside: list[bool] = []

    async def hand_over() -> None:
        try:
            await queue.put("second")
        except asyncio.CancelledError:
            cancelled_inside.append(True)
            raise

    handing_over = hand_over()
    going_on = asyncio.ensure_future(resumed(handing_over, stepped(handing_over)))
    await asyncio.sleep(0)
    going_on.cancel()
    with pytest.raises(asyncio.CancelledError):
        await going_on
    assert cancelled_inside == [True]
    assert queue.get_nowait() == "first"
    await asyncio.sleep(0)
    assert queue.empty()  # the cancelled put never lands
