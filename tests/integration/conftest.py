"""Fixtures for tests on real databases: a SQLite file and the machine's PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork.data import open_engine, sqlite_url
from tests.integration.databases import fresh_postgres_database


@pytest_asyncio.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    async with fresh_postgres_database() as url:
        yield url


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path, "store")
        return
    async with fresh_postgres_database() as url:
        yield url


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``database_url``, disposed after the test."""
    engine = open_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
