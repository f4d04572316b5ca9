"""Ordered, versioned schema migrations, recorded per service, applied once per database.

Alembic wants a script directory and an ``env.py`` per database; a service here
ships a short tuple of SQL steps next to its store instead, so a small runner is
enough: every instance calls ``migrate`` on start, the first takes the lock and
applies what is missing, the others find nothing left to do.

Services may share one database (the Helm chart gives them all one ``database.url``),
so each step is recorded with its owner: ``cellwork_migrations`` holds ``(service,
version, name, applied_at)`` with the primary key ``(service, version)``. One table
for all rather than one per service: a table per service would put a name made from
the service into SQL (quoting, length limits) and would need a query over many
tables to tell what ran in a database; here it is one SELECT.

Many starters at once, of one service or several: the whole run is one transaction
behind one lock for the whole database, SQLite's write lock (taken by a first write)
or PostgreSQL's transaction-level advisory lock. One lock for every service, not one
per service, because the record and its repair (below) are shared, and because a
step may look at what the database holds (recommender checks whose ``users`` table
it finds before moving its rows): that look must not race another service's CREATE
TABLE. Migrations run at start and take milliseconds, so serializing services costs
nothing that matters. The advisory key is the one the runner used before services
were recorded, so old and new starters exclude each other during an upgrade.

The record from before services were recorded (``version`` primary key, ``name``,
``applied_at``, one row per version for all services together) is repaired in place
by the first starter of this code, under the same lock: its rows are kept, owned by
nobody (the service ``''``). A service claims an unowned row only when both its
version and its name match one of its own migrations: the name tells identity's
``(1, "users, refresh tokens, follows")`` from catalog's ``(1, "educators and
items")``, so another service's row never makes a service skip its own schema. Rows
nobody claims stay unowned and change nothing. Two services with a migration of the
same version and the same name cannot be told apart by this rule: name a migration
for what it creates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data.transactions import write_transaction
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.data.migrations")

MigrationStep = Callable[[AsyncConnection], Awaitable[None]]

_UNOWNED = ""
_CREATE_RECORD = (
    "CREATE TABLE {if_not_exists}cellwork_migrations (service TEXT NOT NULL,"
    " version INTEGER NOT NULL, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (service, version))"
)
_ADVISORY_LOCK_KEY = 7426001


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: a version number, a name, its SQL statements, then optional code.

    ``then`` runs after the statements in the same transaction, for what SQL alone
    cannot say portably (a step that depends on what the database holds). It acts
    only through the connection it is given: a lock conflict on SQLite runs the whole
    transaction again. Keep a name once shipped: an old record is claimed by version
    and name (see the module docstring).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    then: MigrationStep | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    repaired_rows: int | None  # rows carried over from the old record; None: no repair
    claimed: list[int]
    applied: list[int]


async def table_columns(conn: AsyncConnection, table: str) -> frozenset[str]:
    """The column names of ``table`` as the connection sees it; empty when it has none.

    For migration steps that must know a table's shape before touching it.
    """

    def read(sync_conn: Connection) -> frozenset[str]:
        inspector = inspect(sync_conn)
        if not inspector.has_table(table):
            return frozenset()
        return frozenset(column["name"] for column in inspector.get_columns(table))

    return await conn.run_sync(read)


async def migrate(
    engine: AsyncEngine, migrations: Sequence[Migration], *, service: str
) -> list[int]:
    """Apply ``service``'s migrations not yet applied, in version order; returns those applied.

    Raises ValueError, before touching the database, for an empty service name or
    repeated versions. Safe to call from many processes, of one service or several,
    at once. A failing step rolls back the whole call and its error is raised.
    """
    if not service.strip():
        raise ValueError("migrate needs the name of the service the migrations belong to")
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"migration versions repeat: {versions}")
    ordered = sorted(migrations, key=lambda m: m.version)

    async def run(conn: AsyncConnection) -> _Outcome:
        await _lock_record(conn, engine.dialect.name)
        repaired = await _repair_old_record(conn)
        done = {
            row[0]
            for row in await conn.execute(
                text("SELECT version FROM cellwork_migrations WHERE service = :s"),
                {"s": service},
            )
        }
        claimed = await _claim_unowned(conn, service, [m for m in ordered if m.version not in done])
        done.update(claimed)
        applied: list[int] = []
        for migration in ordered:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await conn.execute(text(statement))
            if migration.then is not None:
                await migration.then(conn)
            await conn.execute(
                text(
                    "INSERT INTO cellwork_migrations (service, version, name, applied_at)"
                    " VALUES (:s, :v, :n, :t)"
                ),
                {"s": service, "v": migration.version, "n": migration.name, "t": time.time()},
            )
            applied.append(migration.version)
        return _Outcome(repaired, claimed, applied)

    outcome = await write_transaction(engine, run)
    database = engine.url.database
    if outcome.repaired_rows is not None:
        _log.info("data.migrations_repaired", rows=outcome.repaired_rows, database=database)
    if outcome.claimed:
        _log.info("data.migrations_claimed", service=service, versions=outcome.claimed)
    if outcome.applied:
        _log.info("data.migrated", service=service, versions=outcome.applied, database=database)
    return outcome.applied


async def _lock_record(conn: AsyncConnection, dialect: str) -> None:
    """Hold the database's migration lock until the transaction ends; the record exists."""
    if dialect == "sqlite":
        # pysqlite opens the transaction only at the first INSERT, UPDATE or DELETE
        # (DDL before it commits at once). This DELETE, matching no row in either
        # shape of the record, opens it, so every step after it rolls back together,
        # and takes SQLite's write lock: concurrent starters wait here (busy timeout)
        # or run again (write_transaction).
        await conn.execute(text(_CREATE_RECORD.format(if_not_exists="IF NOT EXISTS ")))
        await conn.execute(text("DELETE FROM cellwork_migrations WHERE version < 0"))
        return
    # Before CREATE TABLE IF NOT EXISTS: two of those at once can fail on PostgreSQL.
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
    await conn.execute(text(_CREATE_RECORD.format(if_not_exists="IF NOT EXISTS ")))


async def _repair_old_record(conn: AsyncConnection) -> int | None:
    """Give a record without owners the new shape, its rows unowned; None when none.

    Rows are read and written again, not altered in place: SQLite cannot change a
    primary key, and a new table keeps the constraint names of a fresh database.
    """
    if "service" in await table_columns(conn, "cellwork_migrations"):
        return None
    rows = (
        await conn.execute(text("SELECT version, name, applied_at FROM cellwork_migrations"))
    ).all()
    await conn.execute(text("DROP TABLE cellwork_migrations"))
    await conn.execute(text(_CREATE_RECORD.format(if_not_exists="")))
    if rows:
        await conn.execute(
            text(
                "INSERT INTO cellwork_migrations (service, version, name, applied_at)"
                " VALUES (:s, :v, :n, :t)"
            ),
            [{"s": _UNOWNED, "v": v, "n": n, "t": t} for v, n, t in rows],
        )
    return len(rows)


async def _claim_unowned(
    conn: AsyncConnection, service: str, pending: list[Migration]
) -> list[int]:
    """Take the unowned rows whose version and name match a pending migration."""
    wanted = {(m.version, m.name) for m in pending}
    unowned = await conn.execute(
        text("SELECT version, name FROM cellwork_migrations WHERE service = :none"),
        {"none": _UNOWNED},
    )
    claims = sorted(version for version, name in unowned if (version, name) in wanted)
    if claims:
        await conn.execute(
            text(
                "UPDATE cellwork_migrations SET service = :s WHERE service = :none AND version = :v"
            ),
            [{"s": service, "none": _UNOWNED, "v": v} for v in claims],
        )
    return claims
