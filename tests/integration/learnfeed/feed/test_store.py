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
    assert (await store.put_version("u", [("i1", 1.0)], 10.0)).version == 1
    assert (await store.put_version("u", [("i2", 2.0), ("i1", 1.5)], 20.5)).version == 2
    assert (await store.put_version("v", [], 20.0)).version == 1
    current = await store.get("u")
    assert current is not None
    assert (current.version, current.generated_at) == (2, 20.5)
    assert current.items == [("i2", 2.0), ("i1", 1.5)]


async def test_a_refresh_id_applied_before_stores_nothing_and_answers_its_version(
    engine: AsyncEngine,
) -> None:
    store = FeedStore(engine)
    await store.migrate()
    announced: list[int] = []

    async def announce(conn, version: int) -> list[int]:
        announced.append(version)
        return [version]

    first = await store.put_version("u", [("i1", 1.0)], 10.0, refresh_id="r1", announce=announce)
    await store.put_version("u", [("i2", 1.0)], 11.0, refresh_id="r2", announce=announce)
    again = await store.put_version("u", [("i3", 1.0)], 12.0, refresh_id="r1", announce=announce)
    assert (first.version, first.new, first.announcements) == (1, True, [1])
    assert (again.version, again.new, again.announcements) == (1, False, [])
    assert announced == [1, 2]
    current = await store.get("u")
    assert current is not None and (current.version, current.items) == (2, [("i2", 1.0)])


async def test_applied_refresh_ids_are_forgotten_after_their_retention(
    engine: AsyncEngine,
) -> None:
    store = FeedStore(engine)
    await store.migrate()
    await store.put_version("u", [], 1.0, refresh_id="old", applied_at=100.0)
    await store.put_version("u", [], 2.0, refresh_id="new", applied_at=200.0)
    assert await store.forget_refreshes(applied_before=150.0) == 1
    # forgotten: the old id stores a new version again; the kept one still does not
    assert (await store.put_version("u", [], 3.0, refresh_id="old")).version == 3
    assert (await store.put_version("u", [], 4.0, refresh_id="new")).new is False
