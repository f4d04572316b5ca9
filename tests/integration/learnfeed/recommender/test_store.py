"""The recommender's store on every database it supports: a SQLite file (the default) and
the PostgreSQL server of the machine."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from learnfeed.recommender.store import RecommenderStore

# ``engine`` (tests/integration/conftest.py): a fresh SQLite file, a fresh PostgreSQL database.


async def test_interactions_count_once_and_feed_popularity(engine: AsyncEngine) -> None:
    store = RecommenderStore(engine)
    await store.migrate()
    assert await store.record_interaction("ev1", "u", "i1", "like", 1.0, 3.0)
    assert not await store.record_interaction("ev1", "u", "i1", "like", 1.0, 3.0)
    await store.record_interaction("ev2", "v", "i1", "view", 2.0, 1.0)
    assert await store.popularity() == {"i1": 4.0}
    assert await store.interactions("u") == [("i1", "like", 1.0)]
    await store.mark_ranked("u")
    await store.mark_ranked("v")
    await store.mark_ranked("u")
    assert await store.count_users() == 2
    assert await store.users_after("", 10) == ["u", "v"]


async def test_retention_deletes_old_interactions_in_batches_and_keeps_recent_ones(
    engine: AsyncEngine,
) -> None:
    store = RecommenderStore(engine)
    await store.migrate()
    for n in range(25):
        await store.record_interaction(f"old{n}", "u", f"i{n}", "view", 100.0 + n, 1.0)
    await store.record_interaction("new", "u", "i1", "like", 1000.0, 3.0)
    assert await store.prune_interactions(before=500.0, batch=10) == 25
    assert await store.interactions("u") == [("i1", "like", 1000.0)]
    assert await store.prune_interactions(before=500.0) == 0
    # Popularity keeps what the pruned interactions added.
    assert (await store.popularity())["i1"] == 4.0
