"""Catalog's database: educators and items (lessons and posts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import Migration, migrate

# The owner of MIGRATIONS in the migration record; service.py's SERVICE_NAME is the same.
SERVICE_NAME = "catalog"

MIGRATIONS = (
    Migration(
        1,
        "educators and items",
        (
            "CREATE TABLE educators (id TEXT PRIMARY KEY, name TEXT NOT NULL, topic TEXT NOT NULL)",
            "CREATE TABLE items (id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL,"
            " topic TEXT NOT NULL, educator_id TEXT NOT NULL REFERENCES educators(id),"
            " created_at DOUBLE PRECISION NOT NULL, duration_seconds INTEGER NOT NULL)",
            "CREATE INDEX items_created ON items (created_at DESC)",
        ),
    ),
)

_ITEM_COLUMNS = (
    "i.id, i.kind, i.title, i.topic, i.educator_id, e.name, i.created_at, i.duration_seconds"
)


@dataclass(frozen=True, slots=True)
class Educator:
    id: str
    name: str
    topic: str


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    kind: str
    title: str
    topic: str
    educator_id: str
    educator_name: str
    created_at: float
    duration_seconds: int


class CatalogStore:
    """Educators and items behind a small interface."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS, service=SERVICE_NAME)

    async def seed(self, educators: list[Educator], items: list[Item]) -> int:
        """Insert what is missing (idempotent); returns the number of items added."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO educators VALUES (:id, :name, :topic) ON CONFLICT DO NOTHING"),
                [asdict(e) for e in educators],
            )
            before = (await conn.execute(text("SELECT count(*) FROM items"))).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO items VALUES (:id, :kind, :title, :topic, :educator_id,"
                    " :created_at, :duration_seconds) ON CONFLICT DO NOTHING"
                ),
                [{k: v for k, v in asdict(i).items() if k != "educator_name"} for i in items],
            )
            after = (await conn.execute(text("SELECT count(*) FROM items"))).scalar_one()
        return int(after - before)

    async def items(self, ids: list[str]) -> dict[str, Item]:
        """Items by id; unknown ids are absent."""
        if not ids:
            return {}
        query = text(
            f"SELECT {_ITEM_COLUMNS} FROM items i JOIN educators e ON e.id = i.educator_id"
            " WHERE i.id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        async with self.engine.connect() as conn:
            rows = await conn.execute(query, {"ids": ids})
            return {row[0]: Item(*row) for row in rows}

    async def educators(self, ids: list[str]) -> dict[str, Educator]:
        if not ids:
            return {}
        query = text("SELECT id, name, topic FROM educators WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        async with self.engine.connect() as conn:
            return {row[0]: Educator(*row) for row in await conn.execute(query, {"ids": ids})}

    async def page(self, after: str, limit: int) -> list[Item]:
        """Items in id order after ``after``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT {_ITEM_COLUMNS} FROM items i JOIN educators e"
                    " ON e.id = i.educator_id WHERE i.id > :after ORDER BY i.id LIMIT :n"
                ),
                {"after": after, "n": limit},
            )
            return [Item(*row) for row in rows]

    async def recent(self, limit: int) -> list[Item]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT {_ITEM_COLUMNS} FROM items i JOIN educators e"
                    " ON e.id = i.educator_id ORDER BY i.created_at DESC LIMIT :n"
                ),
                {"n": limit},
            )
            return [Item(*row) for row in rows]
