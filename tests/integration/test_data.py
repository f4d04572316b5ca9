"""Migrations and stores on a real SQLite file (WAL), many instances at once."""

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
