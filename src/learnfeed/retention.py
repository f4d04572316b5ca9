"""Retention: a background job that deletes, every interval, what has been kept long enough.

Shared by the services that keep rows only for a while (the recommender's
interactions, identity's refresh tokens): each hands in its store's ``prune(before)``,
which deletes in bounded batches (short transactions, no long lock) and returns the
number of rows gone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from cellwork.observability import get_logger

_log = get_logger("learnfeed.retention")


class Prune:
    """Every ``interval`` seconds, ``prune(now - keep)`` deletes what is older than ``keep``."""

    def __init__(
        self,
        what: str,
        prune: Callable[[float], Awaitable[int]],
        keep: float,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.what = what
        self.prune = prune
        self.keep = keep
        self.interval = interval
        self.clock = clock

    async def run_once(self) -> int:
        """One pass: the number of rows deleted."""
        deleted = await self.prune(self.clock() - self.keep)
        if deleted:
            _log.info("retention.pruned", what=self.what, rows=deleted)
        return deleted

    async def __call__(self) -> None:
        while True:
            # Spread over the interval, so the instances of a service do not all prune at once.
            await asyncio.sleep(self.interval * random.uniform(0.5, 1.0))
            try:
                await self.run_once()
            except Exception as exc:  # the next pass tries again
                _log.warning("retention.failed", what=self.what, error=str(exc))
