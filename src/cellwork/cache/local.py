"""In-process TTL + LRU cache (cachetools) with single-flight: concurrent misses of one
key are loaded once, so a cold key under load does not stampede the service behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from cachetools import TTLCache

K = TypeVar("K")
V = TypeVar("V")


class LocalCache(Generic[K, V]):
    """Holds up to ``maxsize`` values for ``ttl`` seconds each."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._values: TTLCache[K, V] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._loading: dict[K, asyncio.Future[V | None]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The cached value, or None."""
        return self._values.get(key)

    def put(self, key: K, value: V) -> None:
        self._values[key] = value

    def invalidate(self, key: K) -> None:
        """Forget ``key`` (the next read loads it again)."""
        self._values.pop(key, None)

    async def get_many(
        self, keys: Iterable[K], load: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> dict[K, V]:
        """Values for ``keys``; misses are loaded with one ``load(missing)`` call.

        Keys that ``load`` does not return are absent from the answer (and not
        cached). Keys another caller is already loading are awaited, not reloaded.
        """
        found: dict[K, V] = {}
        waiting: dict[K, asyncio.Future[V | None]] = {}
        missing: list[K] = []
        for key in keys:
            value = self._values.get(key)
            if value is not None:
                found[key] = value
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
            except BaseException:
                for future in futures.values():
                    # Waiters on these keys see the loader's failure as a miss.
                    future.set_result(None)
                raise
            finally:
                for key in missing:
                    self._loading.pop(key, None)
            for key, future in futures.items():
                value = loaded.get(key)
                if value is not None:
                    self._values[key] = value
                    found[key] = value
                future.set_result(value)
        for key, future in waiting.items():
            value = await future
            if value is not None:
                found[key] = value
        return found
