"""Async SQLAlchemy engines; SQLite files get WAL, a busy timeout and foreign keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlite_url(state_dir: Path, name: str) -> str:
    """The URL of service ``name``'s SQLite file under the cell's state directory."""
    directory = Path(state_dir) / "data"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(directory / f'{name}.db').resolve()}"


def open_engine(url: str, **options: Any) -> AsyncEngine:
    """Create an engine for ``url``; no connection is made until first use."""
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True, **options)
    engine = create_async_engine(url, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # The busy timeout first: switching to WAL needs a lock another starter may hold.
        cursor.execute("PRAGMA busy_timeout=10000")
        # WAL lets every instance of a service read while one writes; NORMAL is
        # durable across a process kill (only an OS crash may lose the last commit).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
