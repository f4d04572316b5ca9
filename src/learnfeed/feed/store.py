"""Feed's database: the current version of each user's feed, keyed by user id."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import Migration, migrate

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
)


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One version of a user's feed: ranked (item id, score) pairs."""

    user_id: str
    version: int
    generated_at: float
    items: list[tuple[str, float]]


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
        self, user_id: str, items: list[tuple[str, float]], generated_at: float
    ) -> int:
        """Store a new version; returns its number (the previous one plus one)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "INSERT INTO feeds VALUES (:u, 1, :g, :items) ON CONFLICT(user_id) DO UPDATE"
                    " SET version = feeds.version + 1, generated_at = excluded.generated_at,"
                    " items = excluded.items RETURNING version"
                ),
                {"u": user_id, "g": generated_at, "items": orjson.dumps(items)},
            )
            return int(result.scalar_one())
