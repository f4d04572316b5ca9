"""The outbox table: events written in the caller's transaction, waiting to be relayed.

One table for every service of a database (services may share one PostgreSQL
database): each row names its ``source`` (the service that wrote it) and its
``writer`` (the instance), so a relay takes only its own service's rows. The
schema is recorded in ``cellwork_migrations`` under ``OUTBOX_OWNER``, once per
database, whichever service creates it first.

A row is either a stream event (``kind = 'stream'``: a JetStream publish with a
``Nats-Msg-Id``) or a broadcast (``kind = 'broadcast'``: core NATS, for what every
instance must hear before a later event goes out). ``claimed_at`` is when the writer
last showed it is alive and still owns the row: a relay adopts rows of another
writer whose claim is older than its orphan age (that instance died before it
relayed them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data.migrations import Migration
from cellwork.data.transactions import write_transaction

OUTBOX_OWNER = "cellwork.outbox"
"""The owner of the outbox's migrations in ``cellwork_migrations``."""

RowKind = Literal["stream", "broadcast"]


async def _create_table(conn: AsyncConnection) -> None:
    # An ever-growing id gives the relay its order; never reused (AUTOINCREMENT), so
    # an id that was sent once never names a later row.
    if conn.dialect.name == "postgresql":
        key, blob = "id BIGSERIAL PRIMARY KEY", "BYTEA"
    else:
        key, blob = "id INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
    await conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS cellwork_outbox ({key}, source TEXT NOT NULL,"
            " writer TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,"
            f" payload {blob} NOT NULL, msg_id TEXT NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL, claimed_at DOUBLE PRECISION NOT NULL)"
        )
    )
    await conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS cellwork_outbox_pending"
            " ON cellwork_outbox (source, writer, id)"
        )
    )


OUTBOX_MIGRATIONS = (Migration(1, "outbox", (), then=_create_table),)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting to be relayed."""

    id: int
    kind: RowKind
    subject: str
    payload: bytes
    msg_id: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a source has waiting: how many rows, and when the oldest was written."""

    pending: int
    oldest_created_at: float | None


async def insert_row(
    conn: AsyncConnection,
    *,
    source: str,
    writer: str,
    kind: RowKind,
    subject: str,
    payload: bytes,
    msg_id: str,
) -> int:
    """Add a row inside the caller's transaction; returns its id."""
    now = time.time()
    result = await conn.execute(
        text(
            "INSERT INTO cellwork_outbox (source, writer, kind, subject, payload, msg_id,"
            " created_at, claimed_at) VALUES (:source, :writer, :kind, :subject, :payload,"
            " :msg_id, :now, :now) RETURNING id"
        ),
        {
            "source": source,
            "writer": writer,
            "kind": kind,
            "subject": subject,
            "payload": payload,
            "msg_id": msg_id,
            "now": now,
        },
    )
    return int(result.scalar_one())


class OutboxTable:
    """The relay's queries on one source's rows, as one writer (instance) sees them."""

    def __init__(self, engine: AsyncEngine, source: str, writer: str) -> None:
        self.engine = engine
        self.source = source
        self.writer = writer

    async def adopt_orphans(self, older_than: float) -> int:
        """Take over other writers' rows not claimed since ``older_than``; returns how many.

        Reads first, so a pass with nothing to adopt writes nothing (SQLite has one writer).
        Two relays adopting at once: the UPDATE re-checks the claim, one of them wins.
        """
        params = {"s": self.source, "me": self.writer, "cutoff": older_than}
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    text(
                        "SELECT 1 FROM cellwork_outbox WHERE source = :s AND writer <> :me"
                        " AND claimed_at < :cutoff LIMIT 1"
                    ),
                    params,
                )
            ).first()
        if found is None:
            return 0

        async def adopt(conn: AsyncConnection) -> int:
            result = await conn.execute(
                text(
                    "UPDATE cellwork_outbox SET writer = :me, claimed_at = :now"
                    " WHERE source = :s AND writer <> :me AND claimed_at < :cutoff"
                ),
                {**params, "now": time.time()},
            )
            return int(result.rowcount or 0)

        return await write_transaction(self.engine, adopt)

    async def own_rows(self, limit: int) -> list[OutboxRow]:
        """This writer's rows, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id, kind, subject, payload, msg_id FROM cellwork_outbox"
                    " WHERE source = :s AND writer = :me ORDER BY id LIMIT :n"
                ),
                {"s": self.source, "me": self.writer, "n": limit},
            )
            return [OutboxRow(int(r[0]), r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    async def delete(self, ids: list[int]) -> None:
        """Forget rows that were sent."""
        if not ids:
            return
        statement = text("DELETE FROM cellwork_outbox WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement, {"ids": ids})

        await write_transaction(self.engine, work)

    async def renew_claim(self) -> None:
        """Show this writer is alive and still owns its rows (while it cannot send them)."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                text(
                    "UPDATE cellwork_outbox SET claimed_at = :now"
                    " WHERE source = :s AND writer = :me"
                ),
                {"s": self.source, "me": self.writer, "now": time.time()},
            )

        await write_transaction(self.engine, work)

    async def backlog(self) -> Backlog:
        """The source's rows waiting, of every writer."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT count(*), min(created_at) FROM cellwork_outbox WHERE source = :s"),
                    {"s": self.source},
                )
            ).one()
        return Backlog(int(row[0]), None if row[1] is None else float(row[1]))
