"""Recommender's database: interactions it has consumed, item popularity, known users."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import Migration, migrate

# The owner of MIGRATIONS in the migration record; service.py's SERVICE_NAME is the same.
SERVICE_NAME = "recommender"

MIGRATIONS = (
    Migration(
        1,
        "interactions, popularity, users",
        (
            "CREATE TABLE interactions (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
            " item_id TEXT NOT NULL, kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX interactions_user ON interactions (user_id, at)",
            "CREATE TABLE popularity (item_id TEXT PRIMARY KEY, score DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE users (user_id TEXT PRIMARY KEY, ranked_at DOUBLE PRECISION NOT NULL)",
        ),
    ),
)

MAX_INTERACTIONS = 2000  # per user, newest first: older ones have decayed away anyway


class RecommenderStore:
    """What the ranker learns from behaviour."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS, service=SERVICE_NAME)

    async def record_interaction(
        self, event_id: str, user_id: str, item_id: str, kind: str, at: float, weight: float
    ) -> bool:
        """Store one interaction and add ``weight`` to the item's popularity, once per
        event id (a redelivered event changes nothing); True when it was new."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text("INSERT INTO interactions VALUES (:e, :u, :i, :k, :t) ON CONFLICT DO NOTHING"),
                {"e": event_id, "u": user_id, "i": item_id, "k": kind, "t": at},
            )
            if not result.rowcount:
                return False
            await conn.execute(
                text(
                    "INSERT INTO popularity VALUES (:i, :w) ON CONFLICT(item_id)"
                    " DO UPDATE SET score = popularity.score + excluded.score"
                ),
                {"i": item_id, "w": weight},
            )
        return True

    async def interactions(self, user_id: str) -> list[tuple[str, str, float]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT item_id, kind, at FROM interactions WHERE user_id = :u"
                    " ORDER BY at DESC LIMIT :n"
                ),
                {"u": user_id, "n": MAX_INTERACTIONS},
            )
            return [(r[0], r[1], r[2]) for r in rows]

    async def popularity(self) -> dict[str, float]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT item_id, score FROM popularity"))
            return {r[0]: r[1] for r in rows}

    async def mark_ranked(self, user_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users VALUES (:u, :t) ON CONFLICT(user_id)"
                    " DO UPDATE SET ranked_at = excluded.ranked_at"
                ),
                {"u": user_id, "t": time.time()},
            )

    async def users_after(self, after: str, limit: int) -> list[str]:
        """Known users in id order after ``after`` (for passes in bounded batches)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT user_id FROM users WHERE user_id > :a ORDER BY user_id LIMIT :n"),
                {"a": after, "n": limit},
            )
            return [r[0] for r in rows]

    async def count_users(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM users"))).scalar_one())
