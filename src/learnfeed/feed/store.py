"""Feed's database: the current version of each user's feed, keyed by user id, and the
refreshes already applied (so a redelivered refresh stores no second version)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data import Migration, migrate, write_transaction

# The owner of MIGRATIONS in the migration record; service.py's SERVICE_NAME is the same.
SERVICE_NAME = "feed"

MIGRATIONS = (
    Migration(
        1,
        "feed versions",
        (
            "CREATE TABLE feeds (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " generated_at DOUBLE PRECISION NOT NULL, items BYTEA NOT NULL)",
        ),
    ),
    Migration(
        2,
        "applied refreshes",
        (
            "CREATE TABLE feed_refreshes (refresh_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
            " version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX feed_refreshes_applied_at ON feed_refreshes (applied_at)",
        ),
    ),
)

Announce = Callable[[AsyncConnection, int], Awaitable[list[int]]]
"""``await announce(conn, version)`` inside the transaction that stores ``version``:
adds its announcements to the outbox and returns their row ids."""


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One version of a user's feed: ranked (item id, score) pairs."""

    user_id: str
    version: int
    generated_at: float
    items: list[tuple[str, float]]


@dataclass(frozen=True, slots=True)
class Stored:
    """What ``put_version`` did: the version's number, whether this call stored it
    (False: its refresh was applied before), and the outbox rows announcing it."""

    version: int
    new: bool
    announcements: list[int]


class FeedStore:
    """Feed versions keyed by user id (the shard key once feeds outgrow one database)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS, service=SERVICE_NAME)

    async def get(self, user_id: str) -> FeedVersion | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT version, generated_at, items FROM feeds WHERE user_id = :u"),
                    {"u": user_id},
                )
            ).first()
        if row is None:
            return None
        return FeedVersion(user_id, row[0], row[1], [tuple(i) for i in orjson.loads(row[2])])

    async def put_version(
        self,
        user_id: str,
        items: list[tuple[str, float]],
        generated_at: float,
        *,
        refresh_id: str = "",
        applied_at: float | None = None,
        announce: Announce | None = None,
    ) -> Stored:
        """Store a new version (the previous one plus one) and its announcements, in one
        transaction.

        With a ``refresh_id`` already applied, stores nothing and returns the version
        that refresh stored (``new`` False, no announcements). ``applied_at`` (default:
        now) is when the refresh counts as applied, for ``forget_refreshes``.
        """
        applied = time.time() if applied_at is None else applied_at

        async def work(conn: AsyncConnection) -> Stored:
            if refresh_id:
                # The claim comes first: a second writer of the same refresh waits here
                # (PostgreSQL's row lock, SQLite's write lock) and then finds it taken.
                claimed = await conn.execute(
                    text(
                        "INSERT INTO feed_refreshes VALUES (:r, :u, 0, :t)"
                        " ON CONFLICT (refresh_id) DO NOTHING"
                    ),
                    {"r": refresh_id, "u": user_id, "t": applied},
                )
                if not claimed.rowcount:
                    earlier = await conn.execute(
                        text("SELECT version FROM feed_refreshes WHERE refresh_id = :r"),
                        {"r": refresh_id},
                    )
                    return Stored(int(earlier.scalar_one()), False, [])
            result = await conn.execute(
                text(
                    "INSERT INTO feeds VALUES (:u, 1, :g, :items) ON CONFLICT(user_id) DO UPDATE"
                    " SET version = feeds.version + 1, generated_at = excluded.generated_at,"
                    " items = excluded.items RETURNING version"
                ),
                {"u": user_id, "g": generated_at, "items": orjson.dumps(items)},
            )
            version = int(result.scalar_one())
            if refresh_id:
                await conn.execute(
                    text("UPDATE feed_refreshes SET version = :v WHERE refresh_id = :r"),
                    {"v": version, "r": refresh_id},
                )
            announcements = await announce(conn, version) if announce is not None else []
            return Stored(version, True, announcements)

        return await write_transaction(self.engine, work)

    async def forget_refreshes(self, applied_before: float) -> int:
        """Drop the applied refresh ids older than ``applied_before``; returns how many."""

        async def work(conn: AsyncConnection) -> int:
            result = await conn.execute(
                text("DELETE FROM feed_refreshes WHERE applied_at < :t"), {"t": applied_before}
            )
            return int(result.rowcount or 0)

        return await write_transaction(self.engine, work)
