"""The hashing pool on real threads: the queue is held to its limit, a hash keeps its slot
until it has run, a call with less time left than the queue ahead takes is refused, never
while a thread is idle, and a stall does not refuse every call for good."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork import Overloaded
from cellwork.resilience import LimitSettings
from cellwork.rpc.context import reset_current_call, root_context, set_current_call
from learnfeed.identity.hashing import HashingPool, hashing_limits, too_late
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


@contextlib.contextmanager
def within(timeout: float) -> Iterator[None]:
    """Run the body as part of a call with ``timeout`` seconds left."""
    token = set_current_call(root_context(timeout=timeout))
    try:
        yield
    finally:
        reset_current_call(token)


async def test_a_call_with_less_time_left_than_the_queue_ahead_takes_is_refused():
    clock = Clock()
    pool = HashingPool(threads=1, limits=fixed(8), clock=clock)
    gate = threading.Event()

    def slow_hash() -> str:
        clock.now += 0.5  # this hash ran 0.5 s on its thread
        return "hash"

    try:
        assert await pool.run(slow_hash) == "hash"
        await wait_until(lambda: pool.hash_seconds == 0.5, "the hash time to be learnt")
        with within(0.1):  # the thread is idle: never refused on time
            assert await pool.run(sum, (1, 2)) == 3
        await wait_until(lambda: pool.limiter.in_flight == 0, "the slot to be freed")
        held = [asyncio.create_task(pool.run(gate.wait, 30)) for _ in range(3)]
        await wait_until(lambda: pool.limiter.in_flight == 3, "three hashes to be queued")
        # Three ahead and this one, on one thread: about 4 x 0.5 s.
        with within(1.5), pytest.raises(Overloaded):
            await pool.run(sum, (1, 2))
        with within(5.0):
            admitted = asyncio.create_task(pool.run(sum, (1, 2)))
            gate.set()
            assert await admitted == 3
        assert await asyncio.gather(*held) == [True] * 3
    finally:
        gate.set()
        pool.close()


async def test_after_a_stall_calls_are_hashed_again_not_refused_for_good():
    clock = Clock()
    pool = HashingPool(threads=1, clock=clock)  # the real limits, from 8 hashes
    gate = threading.Event()
    try:
        # A batch queued behind a hash that stalls 3 s (the machine froze): each of them
        # waited 3 s from submission to result, longer than a 2 s deadline.
        stalled = [asyncio.create_task(pool.run(gate.wait, 30)) for _ in range(6)]
        await wait_until(lambda: pool.limiter.in_flight == 6, "the batch to be queued")
        clock.now += 3.0
        gate.set()
        await asyncio.gather(*stalled)
        await wait_until(lambda: pool.limiter.in_flight == 0, "the batch to finish")
        assert pool.hash_seconds > 0.5  # the stall is in the average
        clock.now += 1.0  # the machine moves on: the next hash closes a window of them
        served = 0
        for _ in range(200):
            with within(2.0):
                assert await pool.run(sum, (1, 2)) == 3
            served += 1
            await wait_until(lambda: pool.limiter.in_flight == 0, "the slot to be freed")
        assert served == 200
        assert pool.hash_seconds < 0.01  # hashes that ran brought the average down
    finally:
        gate.set()
        pool.close()


@given(
    st.floats(0, 10),
    st.integers(0, 200),
    st.integers(1, 64),
    st.floats(0, 10),
)
def test_a_call_is_never_refused_on_time_while_a_thread_is_idle(
    remaining, in_flight, threads, hash_seconds
):
    refused = too_late(remaining, in_flight, threads, hash_seconds)
    if in_flight < threads:
        assert not refused
    # More time left never turns an admitted call into a refused one, nor does a
    # shorter queue.
    if not refused:
        assert not too_late(remaining + 1.0, in_flight, threads, hash_seconds)
        assert not too_late(remaining, max(0, in_flight - 1), threads, hash_seconds)


def test_the_queue_never_drops_under_four_hashes_per_thread():
    limits = hashing_limits(2)
    assert (limits.min_limit, limits.initial, limits.max_limit) == (8, 16, 64)
