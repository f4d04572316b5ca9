"""Real databases for integration tests, and the migration record as it was before
services were recorded (to prove that an existing database is repaired)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import Migration

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """The SQLAlchemy URL of a new, empty database on the machine's PostgreSQL,
    dropped afterwards (with whatever connections are left)."""
    name = f"cellwork_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def migrate_before_services_were_recorded(
    engine: AsyncEngine, migrations: Sequence[Migration]
) -> None:
    """Apply ``migrations`` as the runner did when one shared record was keyed by
    version alone: a version already there is skipped, whoever recorded it."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS cellwork_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
        )
        done = {
            row[0] for row in await conn.execute(text("SELECT version FROM cellwork_migrations"))
        }
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await conn.execute(text(statement))
            await conn.execute(
                text("INSERT INTO cellwork_migrations VALUES (:v, :n, :t)"),
                {"v": migration.version, "n": migration.name, "t": time.time()},
            )


async def recorded(engine: AsyncEngine) -> set[tuple[str, int, str]]:
    """The migration record: (service, version, name) rows."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT service, version, name FROM cellwork_migrations"))
        return {(row[0], row[1], row[2]) for row in rows}
