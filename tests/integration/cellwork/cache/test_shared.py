"""The cache tiers: one behaviour suite on the in-process cache alone and with the
machine's Redis behind it; and what Redis adds (sharing, expiry, surviving its loss)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cellwork.cache import LocalCache, RedisTier, TieredCache
from cellwork.testing import free_port
from tests.waiting import wait_until

REDIS = "redis://127.0.0.1:6379/0"


async def _require_redis() -> None:
    """Fail, saying what is missing, when the machine's Redis does not answer: the
    shared tier is tested on a real Redis or not at all, never skipped in silence."""
    client = Redis.from_url(REDIS, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        pytest.fail(f"these tests need Redis at {REDIS} (start redis-server): {exc}")
    finally:
        await client.aclose()


def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(params=["local", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[TieredCache]:
    shared = None
    if request.param == "redis":
        await _require_redis()
        shared = RedisTier.from_url(REDIS, namespace(), ttl=60)
    tiered = TieredCache(LocalCache(maxsize=100, ttl=60), shared)
    yield tiered
    await tiered.close()


class Loader:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, keys: list[str]) -> dict[str, bytes]:
        self.calls.append(sorted(keys))
        # Give way once, as an owner answering over the network does: callers started
        # together then find this load under way and wait for it instead of loading.
        await asyncio.sleep(0)
        return {k: k.encode() for k in keys if not k.startswith("missing")}


async def test_values_load_once_and_unknown_keys_stay_absent(cache: TieredCache) -> None:
    load = Loader()
    results = await asyncio.gather(*(cache.get_many(["a", "b", "missing"], load) for _ in range(8)))
    assert all(r == {"a": b"a", "b": b"b"} for r in results)
    assert load.calls == [["a", "b", "missing"]]
    assert await cache.get_many(["a"], load) == {"a": b"a"}
    assert len(load.calls) == 1


async def test_a_failing_loader_fails_every_waiting_caller(cache: TieredCache) -> None:
    calls = 0

    async def broken(keys: list[str]) -> dict[str, bytes]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)  # give way once, so the other callers join this load
        raise ConnectionError("owner down")

    results = await asyncio.gather(
        *(cache.get_many(["x"], broken) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1  # the waiters got the loader's error, not a load of their own


async def test_a_second_instance_warms_from_redis_not_from_the_owner() -> None:
    await _require_redis()
    ns = namespace()
    first = TieredCache(LocalCache(100, 60), RedisTier.from_url(REDIS, ns, ttl=60))
    second = TieredCache(LocalCache(100, 60), RedisTier.from_url(REDIS, ns, ttl=60))
    load = Loader()
    try:
        await first.get_many(["k1", "k2"], load)
        assert await second.get_many(["k1", "k2", "k3"], load) == {
            "k1": b"k1",
            "k2": b"k2",
            "k3": b"k3",
        }
        assert load.calls == [["k1", "k2"], ["k3"]]  # the second asked the owner for k3 only
    finally:
        await first.close()
        await second.close()


async def test_redis_entries_expire_with_the_ttl() -> None:
    await _require_redis()
    # Long enough to read the entry back on a busy machine, short enough to wait out.
    tier = RedisTier.from_url(REDIS, namespace(), ttl=2.0)
    try:
        await tier.put_many({"k": b"v"})
        assert await tier.get_many(["k"]) == {"k": b"v"}
        ttl_ms = await tier.redis.pttl(f"{tier.namespace}:k")
        assert 0 < ttl_ms <= 2000  # set with the tier's TTL, not kept for ever

        async def gone() -> bool:
            return await tier.get_many(["k"]) == {}

        await wait_until(gone, "the entry to expire")
    finally:
        await tier.close()


async def test_without_redis_lookups_fall_through_to_the_owner() -> None:
    dead = RedisTier.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace(), ttl=60)
    tiered = TieredCache(LocalCache(100, 60), dead)
    load = Loader()
    try:
        assert await tiered.get_many(["a"], load) == {"a": b"a"}
        assert load.calls == [["a"]]
    finally:
        await tiered.close()
