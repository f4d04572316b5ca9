"""data: async engines (SQLite by default, WAL mode) and ordered migrations per service."""

from cellwork.data.engine import open_engine, sqlite_url
from cellwork.data.migrations import Migration, MigrationStep, migrate, table_columns
from cellwork.data.transactions import write_transaction

__all__ = [
    "Migration",
    "MigrationStep",
    "migrate",
    "open_engine",
    "sqlite_url",
    "table_columns",
    "write_transaction",
]
