"""The in-process cache's rules, with the clock passed in."""

import asyncio
import gc
import sys
import tracemalloc

import pytest

from cellwork.cache import LocalCache
from cellwork.cache.local import ENTRY_OVERHEAD
from cellwork.rpc.context import current_call, root_context, set_current_call
from tests.waiting import wait_until


def test_cached_values_expire_and_the_oldest_go_first_past_maxsize() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=2, ttl=10)
    cache.put("a", 1, now=0.0)
    cache.put("b", 2, now=0.0)
    assert cache.get("a", now=9.9) == 1
    assert cache.get("a", now=10.0) is None  # expired
    cache.put("a", 1, now=0.0)
    cache.put("c", 3, now=0.0)  # over maxsize: "b", the oldest, goes
    assert (cache.get("b", now=1.0), cache.get("a", now=1.0), cache.get("c", now=1.0)) == (
        None,
        1,
        3,
    )
    cache.invalidate("a")
    assert cache.get("a", now=1.0) is None and len(cache) == 1


def test_past_the_byte_budget_the_oldest_go_and_an_oversized_value_is_not_kept() -> None:
    cache: LocalCache[str, bytes] = LocalCache(maxsize=100, ttl=10, max_bytes=3000)
    for n in range(10):
        cache.put(f"k{n}", b"x" * 500, now=0.0)
        assert cache.nbytes <= 3000
    # each entry: 533 (bytes object) + key + ENTRY_OVERHEAD, so four fit
    assert [k for k in (f"k{n}" for n in range(10)) if cache.get(k, now=1.0)] == [
        "k6",
        "k7",
        "k8",
        "k9",
    ]
    cache.put("huge", b"x" * 5000, now=0.0)
    assert cache.get("huge", now=1.0) is None and len(cache) == 4
    cache.put("k9", b"y", now=0.0)  # replacing an entry counts its new size only
    assert cache.nbytes == sum(
        sys.getsizeof(v) + sys.getsizeof(k) + ENTRY_OVERHEAD
        for k, v in (("k6", b"x" * 500), ("k7", b"x" * 500), ("k8", b"x" * 500), ("k9", b"y"))
    )
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0


def test_expired_entries_are_freed_without_their_key_being_read_again() -> None:
    cache: LocalCache[str, bytes] = LocalCache(maxsize=10_000, ttl=10)
    for n in range(1000):
        cache.put(f"old{n}", b"v", now=0.0)
    # Puts of other keys after the expiry free the old ones, a batch per call.
    for n in range(10):
        cache.put(f"new{n}", b"v", now=20.0)
    assert len(cache) == 10
    assert cache.nbytes == 10 * (sys.getsizeof(b"v") + sys.getsizeof("new0") + ENTRY_OVERHEAD)
    # Reads of other keys free them too.
    cache.get("new0", now=31.0)
    cache.get("new0", now=31.0)
    assert len(cache) == 0 and cache.nbytes == 0


async def test_reads_free_expired_entries_through_get_many() -> None:
    cache: LocalCache[str, bytes] = LocalCache(maxsize=10_000, ttl=0.01)
    for n in range(300):
        cache.put(f"k{n}", b"v")

    async def load(keys: list[str]) -> dict[str, bytes]:
        return {}

    async def expired() -> bool:
        await cache.get_many(["other"], load)
        return len(cache) == 0

    await wait_until(expired, "expired entries freed by reads of other keys")


async def test_a_cancelled_first_caller_does_not_cancel_the_load_for_the_others() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def load(keys: list[str]) -> dict[str, int]:
        calls.append(keys)
        await release.wait()
        return {k: len(k) for k in keys}

    first = asyncio.create_task(cache.get_many(["a", "bb"], load))
    await wait_until(lambda: calls, "the load to start")
    others = [asyncio.create_task(cache.get_many(["a", "bb", "ccc"][:n], load)) for n in (1, 2)]
    third = asyncio.create_task(cache.get_many(["bb"], load))
    await wait_until(lambda: len(calls) == 1 and not third.done(), "callers waiting")
    first.cancel()
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await third
    release.set()
    assert [await task for task in others] == [{"a": 1}, {"a": 1, "bb": 2}]
    assert calls == [["a", "bb"]]  # loaded once, for everyone
    assert cache.get("bb") == 2  # and kept, though its first caller left


async def test_a_load_whose_every_caller_left_still_fills_the_cache() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)
    release = asyncio.Event()

    async def load(keys: list[str]) -> dict[str, int]:
        await release.wait()
        return {k: 1 for k in keys}

    caller = asyncio.create_task(cache.get_many(["a"], load))
    await wait_until(lambda: len(cache._loading) == 1, "the load to start")
    caller.cancel()
    release.set()
    await wait_until(lambda: cache.get("a") == 1, "the abandoned load to be kept")


async def test_a_failed_load_fails_every_waiter_and_the_next_read_loads_again() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)
    release = asyncio.Event()
    calls = 0

    async def failing(keys: list[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("catalog down")

    callers = [asyncio.create_task(cache.get_many(["a"], failing)) for _ in range(3)]
    await wait_until(lambda: calls == 1, "the load to start")
    release.set()
    for task in callers:
        with pytest.raises(RuntimeError, match="catalog down"):
            await task
    assert calls == 1

    async def working(keys: list[str]) -> dict[str, int]:
        return {"a": 7}

    assert await cache.get_many(["a"], working) == {"a": 7}


async def test_close_cancels_the_loads_in_flight() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)

    async def never(keys: list[str]) -> dict[str, int]:
        await asyncio.Event().wait()
        return {}

    caller = asyncio.create_task(cache.get_many(["a"], never))
    await wait_until(lambda: len(cache._loading) == 1, "the load to start")
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not cache._loading


def test_a_cache_filled_past_its_budget_holds_no_more_memory_than_the_budget() -> None:
    budget = 4 * 2**20
    cache: LocalCache[str, bytes] = LocalCache(maxsize=10**6, ttl=60, max_bytes=budget)
    keys = [f"item-{n:07d}" for n in range(40_000)]  # made before measuring: callers own keys
    values = [bytes(200) for _ in range(40_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in zip(keys, values, strict=True):
            cache.put(key, value, now=0.0)
        del values  # the cache's entries are now the only references to the values
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.nbytes <= budget
    assert len(cache) < 40_000  # the budget, not maxsize, bounded it
    # Slack: the keys are counted by the estimate but allocated before measuring, and
    # the dict's table is sized for the entries evicted too; 10% covers both.
    assert grown <= budget * 1.1, grown


async def test_a_load_keeps_its_first_callers_trace_but_not_its_deadline() -> None:
    cache: LocalCache[str, str] = LocalCache(maxsize=10, ttl=60)
    seen = []

    async def load(keys: list[str]) -> dict[str, str]:
        seen.append(current_call())
        return {k: k for k in keys}

    caller = root_context(timeout=0.5)
    set_current_call(caller)
    assert await cache.get_many(["a"], load) == {"a": "a"}
    [call] = seen
    assert call is not None and call.deadline is None
    assert call.trace == caller.trace
    assert current_call() is caller  # the caller's own context is untouched
