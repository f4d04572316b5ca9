"""In-process TTL cache with single-flight: concurrent misses of one key are loaded once,
so a cold key under load does not stampede the service behind.

A plain dict of (expiry, value) rather than cachetools' TTLCache: a feed read looks up
20 items, and TTLCache's per-lookup upkeep (timer context, LRU links) cost ~6 us each
here against ~0.3 us for a dict lookup and one comparison. Eviction past ``maxsize``
drops the oldest insertions first, which is enough for caches of rarely changing data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _retrieve(future: asyncio.Future[object]) -> None:
    # Marks a failed load's exception as seen when no waiter was there to await it.
    if not future.cancelled():
        future.exception()


class LocalCache(Generic[K, V]):
    """Holds up to ``maxsize`` values for ``ttl`` seconds each."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        if maxsize < 1 or ttl <= 0:
            raise ValueError("maxsize must be >= 1 and ttl > 0")
        self.maxsize = maxsize
        self.ttl = ttl
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V | None]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K, now: float | None = None) -> V | None:
        """The cached value, or None when absent or expired."""
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[0] <= (time.monotonic() if now is None else now):
            del self._values[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float | None = None) -> None:
        """Cache ``value`` for ``ttl`` seconds from ``now``."""
        self._values.pop(key, None)
        self._values[key] = ((time.monotonic() if now is None else now) + self.ttl, value)
        while len(self._values) > self.maxsize:
            del self._values[next(iter(self._values))]

    def invalidate(self, key: K) -> None:
        """Forget ``key`` (the next read loads it again)."""
        self._values.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._values.clear()

    async def get_many(
        self, keys: Iterable[K], load: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> dict[K, V]:
        """Values for ``keys``; misses are loaded with one ``load(missing)`` call.

        Keys that ``load`` does not return are absent from the answer (and not
        cached). Keys another caller is already loading are awaited, not reloaded;
        when that load fails, its error is raised here too.
        """
        now = time.monotonic()
        values = self._values
        found: dict[K, V] = {}
        waiting: dict[K, asyncio.Future[V | None]] = {}
        missing: list[K] = []
        for key in keys:
            entry = values.get(key)
            if entry is not None and entry[0] > now:
                found[key] = entry[1]
            elif key in self._loading:
                waiting[key] = self._loading[key]
            elif key not in found:
                missing.append(key)
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            loop = asyncio.get_running_loop()
            futures = {key: loop.create_future() for key in missing}
            self._loading.update(futures)
            try:
                loaded = await load(missing)
            except BaseException as exc:
                for future in futures.values():
                    # Waiters on these keys fail as the loader did (never a silent miss).
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                        future.add_done_callback(_retrieve)
                    else:
                        future.cancel()
                raise
            finally:
                for key in missing:
                    self._loading.pop(key, None)
            for key, future in futures.items():
                value = loaded.get(key)
                if value is not None:
                    self.put(key, value, now)
                    found[key] = value
                future.set_result(value)
        for key, future in waiting.items():
            value = await future
            if value is not None:
                found[key] = value
        return found
