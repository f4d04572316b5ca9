"""Engines on a real SQLite file."""

from sqlalchemy import text

from cellwork.data import Migration, migrate, open_engine, sqlite_url


async def test_sqlite_files_run_in_wal_mode(tmp_path) -> None:
    engine = open_engine(sqlite_url(tmp_path, "svc"))
    try:
        steps = (Migration(1, "things", ("CREATE TABLE things (id INTEGER PRIMARY KEY)",)),)
        await migrate(engine, steps, service="svc")
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
        assert mode == "wal"
    finally:
        await engine.dispose()
