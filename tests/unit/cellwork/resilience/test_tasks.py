"""stop_task: a task is stopped even when a cancel is swallowed, and only the caller's
own cancellation is raised."""

from __future__ import annotations

import asyncio

import pytest

from cellwork.resilience import stop_task
from tests.waiting import wait_until


async def test_a_loop_whose_request_swallows_the_cancel_is_stopped_all_the_same():
    replies: list[asyncio.Future[str]] = []
    rounds = 0

    async def heartbeat() -> None:
        """A loop around a request, as a heartbeat or probe is around a nats-py request."""
        nonlocal rounds
        while True:
            rounds += 1
            reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            replies.append(reply)
            await asyncio.wait_for(reply, 30)

    task = asyncio.create_task(heartbeat())
    await wait_until(lambda: replies, "the first request")
    # The reply lands, and the cancel comes in the same loop iteration: on Python 3.11
    # wait_for returns the reply and the loop goes on to its next request.
    replies[0].set_result("pong")
    stopping = asyncio.create_task(stop_task(task, recancel_every=0.05))
    await wait_until(stopping.done, "the task to be stopped")
    assert stopping.result() is None
    assert task.cancelled()
    assert rounds in (1, 2)  # 2 where the first cancel was swallowed


async def test_the_callers_own_cancellation_is_raised_not_swallowed():
    may_end = asyncio.Event()
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while not may_end.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancels += 1

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start
    stopping = asyncio.create_task(stop_task(task, recancel_every=0.05))
    await wait_until(lambda: cancels >= 2, "the task to be cancelled again")
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert not task.done()
    may_end.set()
    await stop_task(task)
    assert task.done()


async def test_what_the_task_ended_with_is_returned_not_raised():
    async def failing() -> None:
        raise RuntimeError("broken")

    async def returning() -> None:
        return None

    failed = asyncio.create_task(failing())
    returned = asyncio.create_task(returning())
    await asyncio.wait({failed, returned})
    error = await stop_task(failed)
    assert isinstance(error, RuntimeError)
    assert str(error) == "broken"
    assert await stop_task(returned) is None


async def test_a_task_that_never_started_is_stopped():
    async def never() -> None:
        raise AssertionError("cancelled before its first step")

    task = asyncio.create_task(never())
    assert await stop_task(task) is None
    assert task.cancelled()
