"""Identity's database: users, refresh tokens (hashed), follows."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork import AlreadyExists, NotFound, Unauthenticated
from cellwork.data import Migration, migrate, write_transaction

# The owner of MIGRATIONS in the migration record; service.py's SERVICE_NAME is the same.
SERVICE_NAME = "identity"

MIGRATIONS = (
    Migration(
        1,
        "users, refresh tokens, follows",
        (
            "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
            " name TEXT NOT NULL, password_hash TEXT NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY,"
            " user_id TEXT NOT NULL REFERENCES users(id), family TEXT NOT NULL,"
            " expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION,"
            " revoked INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
            "CREATE TABLE follows (user_id TEXT NOT NULL REFERENCES users(id),"
            " educator_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (user_id, educator_id))",
        ),
    ),
    Migration(
        2,
        "refresh tokens by expiry, for retention",
        ("CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at)",),
    ),
)

PRUNE_BATCH = 5000  # rows deleted per transaction by retention


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str
    created_at: float


class IdentityStore:
    """Users, credentials and follows behind a small interface."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS, service=SERVICE_NAME)

    async def create_user(self, user: User) -> None:
        """Insert a user; raises AlreadyExists when the email is taken."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO users VALUES (:id, :email, :name, :ph, :at)"),
                    {
                        "id": user.id,
                        "email": user.email,
                        "name": user.name,
                        "ph": user.password_hash,
                        "at": user.created_at,
                    },
                )
        except IntegrityError:
            raise AlreadyExists("an account with this email exists") from None

    async def user_by_email(self, email: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT id, email, name, password_hash, created_at FROM users"
                        " WHERE email = :e"
                    ),
                    {"e": email},
                )
            ).first()
        return User(*row) if row else None

    async def user_by_id(self, user_id: str) -> User:
        """The user; raises NotFound."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT id, email, name, password_hash, created_at FROM users WHERE id = :u"
                    ),
                    {"u": user_id},
                )
            ).first()
        if row is None:
            raise NotFound("no such user")
        return User(*row)

    async def update_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("UPDATE users SET password_hash = :p WHERE id = :u"),
                {"p": password_hash, "u": user_id},
            )

    async def add_refresh_token(
        self, token_hash: str, user_id: str, family: str, expires_at: float
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at)"
                    " VALUES (:h, :u, :f, :e)"
                ),
                {"h": token_hash, "u": user_id, "f": family, "e": expires_at},
            )

    async def rotate_refresh_token(self, old_hash: str, new_hash: str, expires_at: float) -> str:
        """Mark ``old_hash`` used and store ``new_hash`` in its family; returns the user id.

        A token used twice revokes its whole family (a stolen token was replayed);
        raises Unauthenticated for unknown, expired, revoked or reused tokens.
        """
        now = time.time()

        async def rotate(conn: AsyncConnection) -> tuple[str, bool]:
            row = (
                await conn.execute(
                    text(
                        "SELECT user_id, family, expires_at, used_at, revoked FROM refresh_tokens"
                        " WHERE token_hash = :h"
                    ),
                    {"h": old_hash},
                )
            ).first()
            if row is None:
                raise Unauthenticated("unknown refresh token")
            user_id, family, expires, used_at, revoked = row
            if used_at is None and not revoked and expires < now:
                raise Unauthenticated("refresh token expired")
            # Conditional: of two concurrent uses of one token only one can win, on any
            # database (read-then-update would let both through under READ COMMITTED).
            claimed = await conn.execute(
                text(
                    "UPDATE refresh_tokens SET used_at = :t"
                    " WHERE token_hash = :h AND used_at IS NULL AND revoked = 0"
                ),
                {"t": now, "h": old_hash},
            )
            if claimed.rowcount != 1:  # used before (or revoked): a replay
                await conn.execute(
                    text("UPDATE refresh_tokens SET revoked = 1 WHERE family = :f"), {"f": family}
                )
                return str(user_id), True
            await conn.execute(
                text(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at)"
                    " VALUES (:h, :u, :f, :e)"
                ),
                {"h": new_hash, "u": user_id, "f": family, "e": expires_at},
            )
            return str(user_id), False

        # Read, then write: a lock conflict reruns it (write_transaction).
        user_id, reused = await write_transaction(self.engine, rotate)
        if reused:
            raise Unauthenticated("refresh token was already used; its session is revoked")
        return user_id

    async def prune_refresh_tokens(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete the tokens of families whose every token expired before ``before``.

        A used token is what detects a replay (its whole family is revoked), so it
        is kept as long as its family can still be refreshed: a family goes only
        when its newest token has expired too. Returns the number of rows deleted.
        """
        deleted = 0
        while True:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    text(
                        "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT t.token_hash"
                        " FROM refresh_tokens t WHERE t.expires_at < :b AND NOT EXISTS"
                        " (SELECT 1 FROM refresh_tokens l WHERE l.family = t.family"
                        " AND l.expires_at >= :b) LIMIT :n)"
                    ),
                    {"b": before, "n": batch},
                )
            deleted += result.rowcount
            if result.rowcount < batch:
                return deleted

    async def follow(self, user_id: str, educator_id: str) -> bool:
        """Record a follow; False when it existed. Raises NotFound for an unknown user."""
        await self.user_by_id(user_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text("INSERT INTO follows VALUES (:u, :e, :t) ON CONFLICT DO NOTHING"),
                {"u": user_id, "e": educator_id, "t": time.time()},
            )
        return bool(result.rowcount)

    async def unfollow(self, user_id: str, educator_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text("DELETE FROM follows WHERE user_id = :u AND educator_id = :e"),
                {"u": user_id, "e": educator_id},
            )
        return bool(result.rowcount)

    async def follows(self, user_id: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT educator_id FROM follows WHERE user_id = :u ORDER BY created_at"),
                {"u": user_id},
            )
            return [r[0] for r in rows]
