"""Feed's store on every database it supports: a SQLite file (the default) and the
PostgreSQL server of the machine."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from learnfeed.feed.store import FeedStore

# ``engine`` (tests/integration/conftest.py): a fresh SQLite file, a fresh PostgreSQL database.


async def test_feed_versions_count_up_per_user(engine: AsyncEngine) -> None:
    store = FeedStore(engine)
    await store.migrate()
    assert await store.get("u") is None
    assert await store.put_version("u", [("i1", 1.0)], 10.0) == 1
    assert await store.put_version("u", [("i2", 2.0), ("i1", 1.5)], 20.5) == 2
    assert await store.put_version("v", [], 20.0) == 1
    current = await store.get("u")
    assert current is not None
    assert (current.version, current.generated_at) == (2, 20.5)
    assert current.items == [("i2", 2.0), ("i1", 1.5)]
