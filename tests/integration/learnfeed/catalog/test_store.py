"""The catalog's store on every database it supports: a SQLite file (the default) and the
PostgreSQL server of the machine."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.store import CatalogStore

# ``engine`` (tests/integration/conftest.py): a fresh SQLite file, a fresh PostgreSQL database.


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


async def test_catalog_instances_seeding_at_once_add_each_item_once(engine: AsyncEngine) -> None:
    educators, items = demo_catalog()
    store = CatalogStore(engine)
    await store.migrate()
    first, second = await asyncio.gather(store.seed(educators, items), store.seed(educators, items))
    assert sorted([first, second]) == [0, len(items)]
