"""Ordered, versioned schema migrations, applied once per database at start.

Alembic wants a script directory and an ``env.py`` per database; a service here
ships a short tuple of SQL steps next to its store instead, so a small runner is
enough: every instance calls ``migrate`` on start, the first takes the write
lock and applies what is missing, the others find nothing left to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data.transactions import write_transaction
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.data.migrations")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: a version number, a name, and its SQL statements."""

    version: int
    name: str
    statements: tuple[str, ...]


async def migrate(engine: AsyncEngine, migrations: tuple[Migration, ...]) -> list[int]:
    """Apply the migrations not yet applied, in version order; returns those applied.

    Raises ValueError when versions repeat. Safe to call from many processes at once.
    """
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"migration versions repeat: {versions}")

    async def apply(conn: AsyncConnection) -> list[int]:
        applied: list[int] = []
        if engine.dialect.name != "sqlite":
            await conn.execute(text("SELECT pg_advisory_xact_lock(7426001)"))
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS cellwork_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
        )
        if engine.dialect.name == "sqlite":
            # A write first takes SQLite's write lock: concurrent starters wait here.
            await conn.execute(text("DELETE FROM cellwork_migrations WHERE version < 0"))
        rows = await conn.execute(text("SELECT version FROM cellwork_migrations"))
        done = {row[0] for row in rows}
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.statements:
                await conn.execute(text(statement))
            await conn.execute(
                text("INSERT INTO cellwork_migrations VALUES (:v, :n, :t)"),
                {"v": migration.version, "n": migration.name, "t": time.time()},
            )
            applied.append(migration.version)
        return applied

    applied_now = await write_transaction(engine, apply)
    if applied_now:
        _log.info("data.migrated", versions=applied_now, database=engine.url.database)
    return applied_now
