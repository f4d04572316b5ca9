"""The hashing pool on real threads: the queue is held to its limit, a hash keeps its slot
until it has run, and a call with less time left than the queue takes is refused."""

import asyncio
import threading

import pytest

from cellwork import Overloaded
from cellwork.resilience import LimitSettings
from cellwork.rpc.context import reset_current_call, root_context, set_current_call
from learnfeed.identity.hashing import HashingPool, hashing_limits
from tests.waiting import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fixed(limit: int) -> LimitSettings:
    return LimitSettings(initial=limit, min_limit=limit, max_limit=limit, min_samples=1)


async def test_hashes_over_the_limit_are_refused_at_once_and_a_slot_frees_when_one_ends():
    pool = HashingPool(threads=1, limits=fixed(2))
    gate = threading.Event()
    try:
        held = [asyncio.create_task(pool.run(gate.wait, 30)) for _ in range(2)]
        await wait_until(lambda: pool.limiter.in_flight == 2, "both hashes to be queued")
        with pytest.raises(Overloaded) as refused:
            await pool.run(gate.wait, 30)
        assert refused.value.retry_after == 1.0
        gate.set()
        assert await asyncio.gather(*held) == [True, True]
        await wait_until(lambda: pool.limiter.in_flight == 0, "the slots to be freed")
        assert await pool.run(sum, (1, 2)) == 3
    finally:
        gate.set()
        pool.close()


async def test_a_caller_that_gives_up_leaves_the_slot_taken_until_the_hash_has_run():
    pool = HashingPool(threads=1, limits=fixed(4))
    gate = threading.Event()
    try:
        task = asyncio.create_task(pool.run(gate.wait, 30))
        await wait_until(lambda: pool.limiter.in_flight == 1, "the hash to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.limiter.in_flight == 1  # its thread is still busy with it
        gate.set()
        await wait_until(lambda: pool.limiter.in_flight == 0, "the slot to be freed")
    finally:
        gate.set()
        pool.close()


async def test_a_call_with_less_time_left_than_the_queue_takes_is_refused():
    clock = Clock()
    pool = HashingPool(threads=1, limits=fixed(4), clock=clock)

    def slow_hash() -> str:
        clock.now += 1.5  # this hash took 1.5 s, queue included
        return "hash"

    try:
        assert await pool.run(slow_hash) == "hash"
        await wait_until(lambda: pool.limiter.in_flight == 0, "the slot to be freed")
        for timeout, refused in ((1.0, True), (5.0, False)):
            token = set_current_call(root_context(timeout=timeout))
            try:
                if refused:
                    with pytest.raises(Overloaded):
                        await pool.run(slow_hash)
                else:
                    assert await pool.run(slow_hash) == "hash"
            finally:
                reset_current_call(token)
    finally:
        pool.close()


def test_the_queue_never_drops_under_four_hashes_per_thread():
    limits = hashing_limits(2)
    assert (limits.min_limit, limits.initial, limits.max_limit) == (8, 16, 64)
