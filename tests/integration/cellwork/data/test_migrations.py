"""Migrations recorded per service, on a SQLite file and on PostgreSQL: services that
share one database never skip each other, and the record from before is repaired."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data import Migration, migrate, open_engine, sqlite_url
from tests.integration.databases import migrate_before_services_were_recorded, recorded

THINGS = (
    Migration(1, "things", ("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)",)),
    Migration(2, "things.size", ("ALTER TABLE things ADD COLUMN size INTEGER",)),
)
# Another service's first migration: the same version, another name, another table.
OTHER = (Migration(1, "gadgets", ("CREATE TABLE gadgets (id INTEGER PRIMARY KEY)",)),)


async def test_migrations_apply_once_when_instances_start_together(engine: AsyncEngine) -> None:
    applied = await asyncio.gather(*(migrate(engine, THINGS, service="a") for _ in range(4)))
    assert sorted(applied, key=len) == [[], [], [], [1, 2]]
    assert await recorded(engine) == {("a", 1, "things"), ("a", 2, "things.size")}


async def test_services_with_the_same_version_and_sql_both_run(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE runs (n INTEGER NOT NULL)"))
        await conn.execute(text("INSERT INTO runs VALUES (0)"))
    count = (Migration(1, "count", ("UPDATE runs SET n = n + 1",)),)

    assert await migrate(engine, count, service="a") == [1]
    assert await migrate(engine, count, service="b") == [1]
    assert await migrate(engine, count, service="a") == []
    assert await migrate(engine, count, service="b") == []

    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM runs"))).scalar_one() == 2
    assert await recorded(engine) == {("a", 1, "count"), ("b", 1, "count")}


async def test_an_old_record_keeps_its_rows_and_a_service_claims_only_its_own(
    engine: AsyncEngine,
) -> None:
    await migrate_before_services_were_recorded(engine, THINGS)
    async with engine.connect() as conn:
        before = dict(
            (await conn.execute(text("SELECT version, applied_at FROM cellwork_migrations"))).all()
        )

    # b's version 1 is recorded already, but under a's name: b applies its own.
    assert await migrate(engine, OTHER, service="b") == [1]
    assert await recorded(engine) == {
        ("", 1, "things"),
        ("", 2, "things.size"),
        ("b", 1, "gadgets"),
    }
    # a claims its rows (version and name match) and applies only what is new.
    third = Migration(3, "things.colour", ("ALTER TABLE things ADD COLUMN colour TEXT",))
    assert await migrate(engine, (*THINGS, third), service="a") == [3]
    assert await recorded(engine) == {
        ("a", 1, "things"),
        ("a", 2, "things.size"),
        ("a", 3, "things.colour"),
        ("b", 1, "gadgets"),
    }
    async with engine.connect() as conn:
        kept = await conn.execute(
            text("SELECT version, applied_at FROM cellwork_migrations WHERE service = 'a'")
        )
        assert {v: t for v, t in kept if v in before} == before
        await conn.execute(text("SELECT id, name, size, colour FROM things"))
        await conn.execute(text("SELECT id FROM gadgets"))


async def test_a_row_whose_name_differs_is_not_claimed(engine: AsyncEngine) -> None:
    await migrate_before_services_were_recorded(engine, THINGS[:1])
    renamed = (Migration(1, "gadgets", ("CREATE TABLE gadgets (id INTEGER PRIMARY KEY)",)),)
    assert await migrate(engine, renamed, service="a") == [1]
    assert await recorded(engine) == {("", 1, "things"), ("a", 1, "gadgets")}


async def test_starters_repairing_an_old_record_at_once_apply_each_migration_once(
    database_url: str,
) -> None:
    # One engine per starter, as separate processes would have.
    engines = [open_engine(database_url) for _ in range(4)]
    try:
        await migrate_before_services_were_recorded(engines[0], THINGS[:1])
        applied = await asyncio.gather(
            migrate(engines[0], THINGS, service="a"),
            migrate(engines[1], OTHER, service="b"),
            migrate(engines[2], THINGS, service="a"),
            migrate(engines[3], OTHER, service="b"),
        )
        assert sorted(applied[0] + applied[2]) == [2]
        assert sorted(applied[1] + applied[3]) == [1]
        assert await recorded(engines[0]) == {
            ("a", 1, "things"),
            ("a", 2, "things.size"),
            ("b", 1, "gadgets"),
        }
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_failing_step_rolls_back_its_statements_and_is_not_recorded(
    engine: AsyncEngine,
) -> None:
    async def refuse(conn: AsyncConnection) -> None:
        raise RuntimeError("this step cannot run here")

    failing = Migration(2, "widgets", ("CREATE TABLE widgets (id INTEGER)",), then=refuse)
    with pytest.raises(RuntimeError, match="cannot run"):
        await migrate(engine, (THINGS[0], failing), service="a")

    assert await migrate(engine, THINGS[:1], service="a") == [1]  # nothing of it stayed
    async with engine.connect() as conn:
        assert await conn.run_sync(lambda c: c.dialect.has_table(c, "widgets")) is False


async def test_repeated_versions_are_refused(tmp_path) -> None:
    engine = open_engine(sqlite_url(tmp_path, "svc"))
    try:
        with pytest.raises(ValueError, match="repeat"):
            await migrate(engine, (THINGS[0], THINGS[0]), service="a")
    finally:
        await engine.dispose()


async def test_migrations_without_a_service_name_are_refused(tmp_path) -> None:
    engine = open_engine(sqlite_url(tmp_path, "svc"))
    try:
        with pytest.raises(ValueError, match="name of the service"):
            await migrate(engine, THINGS, service=" ")
    finally:
        await engine.dispose()
