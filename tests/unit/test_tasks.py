"""node.tasks: waits with a timeout that never lose a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from node.tasks import sleep_or_stop, wait_within


def test_a_cancel_arriving_with_the_result_is_not_dropped() -> None:
    """On Python 3.11 ``asyncio.wait_for`` returns the result when the cancellation
    comes in the same loop step, and the task runs on as if never cancelled."""

    async def scenario() -> None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(wait_within(fut, 10))
        await asyncio.sleep(0)  # the task now waits on fut
        fut.set_result(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_timeouts_cancel_what_was_awaited_and_results_pass() -> None:
    async def scenario() -> None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await wait_within(fut, 0.01)
        assert fut.cancelled()
        assert await wait_within(asyncio.sleep(0, result=7), 1.0) == 7
        assert await wait_within(asyncio.sleep(0, result=8), None) == 8
        stop = asyncio.Event()
        assert await sleep_or_stop(stop, 0.01) is False
        stop.set()
        assert await sleep_or_stop(stop, 10) is True

    asyncio.run(scenario())
