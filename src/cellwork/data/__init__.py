"""data: async engines (SQLite by default, WAL mode) and ordered migrations."""

from cellwork.data.engine import open_engine, sqlite_url
from cellwork.data.migrations import Migration, migrate
from cellwork.data.transactions import write_transaction

__all__ = ["Migration", "migrate", "open_engine", "sqlite_url", "write_transaction"]
