"""Migrations and stores on a real SQLite file (WAL), many instances at once."""

import asyncio

import pytest
from sqlalchemy import text

from cellwork.cache import LocalCache
from cellwork.data import Migration, migrate, open_engine, sqlite_url

STEPS = (
    Migration(1, "things", ("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)",)),
    Migration(2, "things.size", ("ALTER TABLE things ADD COLUMN size INTEGER",)),
)


async def test_sqlite_files_run_in_wal_mode(tmp_path) -> None:
    engine = open_engine(sqlite_url(tmp_path, "svc"))
    try:
        await migrate(engine, STEPS)
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
        assert mode == "wal"
    finally:
        await engine.dispose()


async def test_repeated_versions_are_refused(tmp_path) -> None:
    engine = open_engine(sqlite_url(tmp_path, "svc"))
    with pytest.raises(ValueError, match="repeat"):
        await migrate(engine, (STEPS[0], STEPS[0]))
    await engine.dispose()


async def test_concurrent_misses_of_one_key_load_it_once() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)
    loads: list[list[str]] = []

    async def load(keys: list[str]) -> dict[str, int]:
        loads.append(keys)
        await asyncio.sleep(0.05)
        return {k: len(k) for k in keys if k != "missing"}

    results = await asyncio.gather(*(cache.get_many(["abc", "missing"], load) for _ in range(10)))
    assert all(r == {"abc": 3} for r in results)
    assert loads == [["abc", "missing"]]
    assert await cache.get_many(["abc"], load) == {"abc": 3}
    assert len(loads) == 1


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


async def test_callers_waiting_on_a_failed_load_see_its_error() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=10, ttl=60)

    async def broken(keys: list[str]) -> dict[str, int]:
        await asyncio.sleep(0.05)
        raise ConnectionError("catalog down")

    results = await asyncio.gather(
        *(cache.get_many(["a"], broken) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert cache.get("a") is None
