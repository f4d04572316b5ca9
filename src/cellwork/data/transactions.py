"""Write transactions that survive SQLite's lock upgrades.

In WAL mode a transaction that reads and then writes cannot wait for the lock when
another connection committed in between: SQLite answers "database is locked" at
once instead of invoking the busy timeout. Running the whole transaction again is
the documented remedy; ``write_transaction`` does it with a short jittered back-off.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


def _is_lock_conflict(exc: OperationalError) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


async def write_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], attempts: int = 30
) -> T:
    """Run ``work(conn)`` in one transaction, again from the start on a lock conflict.

    ``work`` must have no effect outside the transaction. Raises the last
    OperationalError after ``attempts`` conflicts, and any other error at once.
    """
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except OperationalError as exc:
            if not _is_lock_conflict(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0.005, 0.02) * min(attempt + 1, 5))
    raise AssertionError("unreachable")
