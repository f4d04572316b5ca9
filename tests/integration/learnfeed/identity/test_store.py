"""One behaviour suite for learnfeed's stores, run on every database they support:
a SQLite file (the default) and the PostgreSQL server of the machine."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork import AlreadyExists, NotFound, Unauthenticated
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.store import CatalogStore
from learnfeed.feed.store import FeedStore
from learnfeed.identity.store import IdentityStore, User
from learnfeed.recommender.store import RecommenderStore

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


async def test_the_demo_catalog_seeds_once(engine: AsyncEngine) -> None:
    educators, items = demo_catalog()
    store = CatalogStore(engine)
    await store.migrate()
    assert await store.seed(educators, items) == len(items)
    assert await store.seed(educators, items) == 0
    found = await store.items(["i00001", "nope"])
    assert list(found) == ["i00001"] and found["i00001"].educator_name
    assert len(await store.recent(10)) == 10
    page = await store.page("i00010", 5)
    assert [i.id for i in page] == [f"i{n:05d}" for n in range(11, 16)]


async def test_accounts_refresh_tokens_and_follows(engine: AsyncEngine) -> None:
    store = IdentityStore(engine)
    await store.migrate()
    user = User("u1", "a@example.org", "Ann", "hash", time.time())
    await store.create_user(user)
    with pytest.raises(AlreadyExists):
        await store.create_user(User("u2", "a@example.org", "Dup", "hash", time.time()))
    assert (await store.user_by_email("a@example.org")) == user
    with pytest.raises(NotFound):
        await store.user_by_id("nobody")

    await store.add_refresh_token("h1", "u1", "family", time.time() + 60)
    assert await store.rotate_refresh_token("h1", "h2", time.time() + 60) == "u1"
    with pytest.raises(Unauthenticated, match="already used"):
        await store.rotate_refresh_token("h1", "h3", time.time() + 60)
    with pytest.raises(Unauthenticated):  # the replay revoked the family
        await store.rotate_refresh_token("h2", "h4", time.time() + 60)
    await store.add_refresh_token("old", "u1", "other", time.time() - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        await store.rotate_refresh_token("old", "h5", time.time() + 60)

    assert await store.follow("u1", "e001") is True
    assert await store.follow("u1", "e001") is False
    assert await store.follows("u1") == ["e001"]
    assert await store.unfollow("u1", "e001") is True
    assert await store.follows("u1") == []


async def test_two_concurrent_uses_of_one_refresh_token_cannot_both_win(
    engine: AsyncEngine,
) -> None:
    store = IdentityStore(engine)
    await store.migrate()
    await store.create_user(User("u1", "b@example.org", "Bo", "hash", time.time()))
    await store.add_refresh_token("t", "u1", "fam", time.time() + 60)
    results = await asyncio.gather(
        *(store.rotate_refresh_token("t", f"n{k}", time.time() + 60) for k in range(4)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if r == "u1") <= 1
    assert all(r == "u1" or isinstance(r, Unauthenticated) for r in results)


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
