"""learnfeed's services in one shared database, and databases migrated before services
were recorded: no service skips another's schema or touches another's tables."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import Migration, migrate, open_engine, table_columns
from learnfeed.catalog import store as catalog
from learnfeed.feed import store as feed
from learnfeed.identity import store as identity
from learnfeed.recommender import store as recommender
from tests.integration.databases import migrate_before_services_were_recorded, recorded

STORES: tuple[ModuleType, ...] = (catalog, feed, identity, recommender)

# Recommender's first migration as it was when it created a table named users.
RECOMMENDER_BEFORE = Migration(
    1,
    "interactions, popularity, users",
    (
        "CREATE TABLE interactions (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
        " item_id TEXT NOT NULL, kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX interactions_user ON interactions (user_id, at)",
        "CREATE TABLE popularity (item_id TEXT PRIMARY KEY, score DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, ranked_at DOUBLE PRECISION NOT NULL)",
    ),
)
IDENTITY_USERS = {"id", "email", "name", "password_hash", "created_at"}


def everything_recorded(*stores: ModuleType) -> set[tuple[str, int, str]]:
    return {(s.SERVICE_NAME, m.version, m.name) for s in stores for m in s.MIGRATIONS}


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_every_service_migrates_into_one_shared_postgres_database(
    postgres_url: str,
) -> None:
    # One engine per service, all started at once, as the Helm chart's pods would.
    engines = [open_engine(postgres_url) for _ in STORES]
    try:
        await asyncio.gather(
            *(
                migrate(engine, s.MIGRATIONS, service=s.SERVICE_NAME)
                for engine, s in zip(engines, STORES, strict=True)
            )
        )
        assert await table_names(engines[0]) == {
            "cellwork_migrations",
            "educators",
            "items",
            "feeds",
            "feed_refreshes",
            "users",
            "refresh_tokens",
            "follows",
            "interactions",
            "popularity",
            "ranked_users",
        }
        assert await recorded(engines[0]) == everything_recorded(*STORES)
        again = [
            await migrate(engine, s.MIGRATIONS, service=s.SERVICE_NAME)
            for engine, s in zip(engines, STORES, strict=True)
        ]
        assert again == [[], [], [], []]

        # identity's users and recommender's ranked users live side by side.
        users = identity.IdentityStore(engines[2])
        await users.create_user(identity.User("u1", "a@example.org", "Ann", "h", time.time()))
        ranked = recommender.RecommenderStore(engines[3])
        await ranked.mark_ranked("u1")
        await ranked.mark_ranked("u2")
        assert await ranked.count_users() == 2
        assert (await users.user_by_id("u1")).email == "a@example.org"
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_old_shared_record_is_repaired_and_the_skipped_service_creates_its_tables(
    engine: AsyncEngine,
) -> None:
    # Before: identity recorded version 1, so recommender's version 1 was skipped.
    await migrate_before_services_were_recorded(engine, identity.MIGRATIONS)
    await migrate_before_services_were_recorded(engine, (RECOMMENDER_BEFORE,))
    ann = identity.User("u1", "a@example.org", "Ann", "h", 1.0)
    await identity.IdentityStore(engine).create_user(ann)
    assert "interactions" not in await table_names(engine)

    ranked = recommender.RecommenderStore(engine)
    await ranked.migrate()  # first, while identity's row is still unowned
    await identity.IdentityStore(engine).migrate()

    assert await recorded(engine) == everything_recorded(identity, recommender)
    assert await identity.IdentityStore(engine).user_by_email("a@example.org") == ann
    async with engine.connect() as conn:
        assert await table_columns(conn, "users") == IDENTITY_USERS
    await ranked.record_interaction("e1", "u1", "i1", "like", 1.0, 3.0)
    await ranked.mark_ranked("u1")
    assert await ranked.count_users() == 1
    assert await ranked.popularity() == {"i1": 3.0}


async def test_a_recommender_database_with_its_old_users_table_keeps_its_rows_under_the_new_name(
    engine: AsyncEngine,
) -> None:
    await migrate_before_services_were_recorded(engine, (RECOMMENDER_BEFORE,))
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO users VALUES (:u, :t)"),
            [{"u": "u1", "t": 1.0}, {"u": "u2", "t": 2.0}, {"u": "u3", "t": 3.0}],
        )

    store = recommender.RecommenderStore(engine)
    await store.migrate()

    assert await store.count_users() == 3
    assert await store.users_after("u1", 10) == ["u2", "u3"]
    async with engine.connect() as conn:
        moved = await conn.execute(text("SELECT user_id, ranked_at FROM ranked_users"))
        assert sorted(moved.all()) == [("u1", 1.0), ("u2", 2.0), ("u3", 3.0)]
    assert "users" not in await table_names(engine)
    assert await recorded(engine) == everything_recorded(recommender)
