"""Recommender's database: interactions it has consumed, item popularity, ranked users."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data import Migration, migrate, table_columns

# The owner of MIGRATIONS in the migration record; service.py's SERVICE_NAME is the same.
SERVICE_NAME = "recommender"

# The shape of the ``users`` table that migration 1 created before version 2.
_OWN_OLD_USERS = frozenset({"user_id", "ranked_at"})


async def _move_own_users(conn: AsyncConnection) -> None:
    """Move the rows of recommender's old ``users`` table into ``ranked_users``.

    In a database shared with identity, ``users`` is identity's: it is recognised by
    its columns and left alone (never read, renamed or dropped).
    """
    if await table_columns(conn, "users") != _OWN_OLD_USERS:
        return
    await conn.execute(
        text("INSERT INTO ranked_users (user_id, ranked_at) SELECT user_id, ranked_at FROM users")
    )
    await conn.execute(text("DROP TABLE users"))


MIGRATIONS = (
    Migration(
        1,
        # The name is the one recorded by databases migrated before version 2 (it is
        # how they are recognised as recommender's); the users table it named was
        # identity's name too, so it is created by version 2 as ranked_users.
        "interactions, popularity, users",
        (
            "CREATE TABLE interactions (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
            " item_id TEXT NOT NULL, kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX interactions_user ON interactions (user_id, at)",
            "CREATE TABLE popularity (item_id TEXT PRIMARY KEY, score DOUBLE PRECISION NOT NULL)",
        ),
    ),
    Migration(
        2,
        "ranked users in their own table",
        (
            "CREATE TABLE ranked_users (user_id TEXT PRIMARY KEY,"
            " ranked_at DOUBLE PRECISION NOT NULL)",
        ),
        then=_move_own_users,
    ),
    Migration(
        3,
        "interactions by age, for retention",
        ("CREATE INDEX interactions_at ON interactions (at)",),
    ),
)

MAX_INTERACTIONS = 2000  # per user, newest first: older ones have decayed away anyway
PRUNE_BATCH = 5000  # rows deleted per transaction by retention


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

    async def prune_interactions(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete interactions that happened before ``before``; the number deleted.

        Their event ids are forgotten with them: a redelivery of one would count
        again, so ``before`` must lie beyond every redelivery (see
        ``contract.INTERACTION_REDELIVERY_HORIZON``). Popularity keeps what they added.
        """
        deleted = 0
        while True:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    text(
                        "DELETE FROM interactions WHERE event_id IN (SELECT event_id"
                        " FROM interactions WHERE at < :b LIMIT :n)"
                    ),
                    {"b": before, "n": batch},
                )
            deleted += result.rowcount
            if result.rowcount < batch:
                return deleted

    async def popularity(self) -> dict[str, float]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT item_id, score FROM popularity"))
            return {r[0]: r[1] for r in rows}

    async def mark_ranked(self, user_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO ranked_users VALUES (:u, :t) ON CONFLICT(user_id)"
                    " DO UPDATE SET ranked_at = excluded.ranked_at"
                ),
                {"u": user_id, "t": time.time()},
            )

    async def users_after(self, after: str, limit: int) -> list[str]:
        """Known users in id order after ``after`` (for passes in bounded batches)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT user_id FROM ranked_users WHERE user_id > :a ORDER BY user_id LIMIT :n"
                ),
                {"a": after, "n": limit},
            )
            return [r[0] for r in rows]

    async def count_users(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM ranked_users"))).scalar_one())
