"""In-process TTL cache with single-flight: concurrent misses of one key are loaded once,
so a cold key under load does not stampede the service behind.

A plain dict of (expiry, value, size) rather than cachetools' TTLCache: a feed read
looks up 20 items, and TTLCache's per-lookup upkeep (timer context, LRU links) cost
~6 us each here against ~0.3 us for a dict lookup and one comparison.

Bounds: at most ``maxsize`` entries and, with ``max_bytes``, at most that many bytes
as ``size`` estimates them; past either the oldest insertions go first. Every entry
lives ``ttl`` seconds, so entries expire in insertion order: expired ones are freed
from the front of the dict on the cache's own, a few at a time on puts and reads
(one float comparison per read when nothing is due), not only when their key is
read again.

A load belongs to the cache, not to the caller that started it: it runs as a task
the cache owns, so a caller that is cancelled (a part cut at its deadline) stops
waiting while every other waiter still gets the value.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Generic, TypeVar

from cellwork.rpc.context import current_call, set_current_call

K = TypeVar("K")
V = TypeVar("V")

# What an entry costs beyond its key and value: the dict's slot and index share
# (~40 bytes at its usual fill), the (expiry, value, size) tuple (64) and the float
# and int in it (24 + 28), measured with tracemalloc on CPython 3.11.
ENTRY_OVERHEAD = 160
# Expired entries freed by one put or read at most: a burst of expiries is spread
# over the following calls instead of stalling one of them.
EXPIRE_BATCH = 256


def shallow_size(value: object) -> int:
    """``sys.getsizeof(value)``: exact for bytes and str, an underestimate for containers.

    The default size of a value; a cache of containers passes its own estimate.
    """
    return sys.getsizeof(value)


class LocalCache(Generic[K, V]):
    """Holds up to ``maxsize`` values (and ``max_bytes``) for ``ttl`` seconds each.

    ``size(value)`` estimates a value's bytes (``shallow_size`` by default); the key
    and ``ENTRY_OVERHEAD`` are added to it. A value larger than the whole budget is
    not kept. ``max_bytes=0`` bounds by entries only.
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        max_bytes: int = 0,
        size: Callable[[V], int] = shallow_size,
    ) -> None:
        if maxsize < 1 or ttl <= 0 or max_bytes < 0:
            raise ValueError("maxsize must be >= 1, ttl > 0 and max_bytes >= 0")
        self.maxsize = maxsize
        self.ttl = ttl
        self.max_bytes = max_bytes or math.inf
        self.size = size
        self._values: dict[K, tuple[float, V, int]] = {}
        self._bytes = 0
        # A lower bound on the oldest entry's expiry: no sweep is due before it.
        self._sweep_at = math.inf
        self._loading: dict[K, asyncio.Task[dict[K, V]]] = {}
        self._loads: set[asyncio.Task[dict[K, V]]] = set()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    @property
    def nbytes(self) -> int:
        """The estimated bytes held (values, keys and per-entry overhead)."""
        return self._bytes

    def get(self, key: K, now: float | None = None) -> V | None:
        """The cached value, or None when absent or expired."""
        entry = self._values.get(key)
        if entry is None:
            return None
        now = time.monotonic() if now is None else now
        if now >= self._sweep_at:
            self._expire(now)
        if entry[0] <= now:
            self._drop(key)
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float | None = None) -> None:
        """Cache ``value`` for ``ttl`` seconds from ``now``."""
        now = time.monotonic() if now is None else now
        self._drop(key)
        size = self.size(value) + sys.getsizeof(key) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        expiry = now + self.ttl
        self._values[key] = (expiry, value, size)
        self._bytes += size
        self._sweep_at = min(self._sweep_at, expiry)
        self._expire(now)
        values = self._values
        while len(values) > self.maxsize or self._bytes > self.max_bytes:
            self._drop(next(iter(values)))

    def invalidate(self, key: K) -> None:
        """Forget ``key`` (the next read loads it again)."""
        self._drop(key)

    def clear(self) -> None:
        """Forget everything (loads in flight still finish, and are kept)."""
        self._values.clear()
        self._bytes = 0
        self._sweep_at = math.inf

    def _drop(self, key: K) -> None:
        entry = self._values.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]

    def _expire(self, now: float) -> None:
        """Free up to ``EXPIRE_BATCH`` expired entries from the front (the oldest)."""
        values = self._values
        for _ in range(EXPIRE_BATCH):
            if not values:
                self._sweep_at = math.inf
                return
            key = next(iter(values))
            expiry = values[key][0]
            if expiry > now:
                self._sweep_at = expiry
                return
            self._drop(key)
        # More may be due: the next call goes on.
        self._sweep_at = now

    async def get_many(
        self, keys: Iterable[K], load: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> dict[K, V]:
        """Values for ``keys``; misses are loaded with one ``load(missing)`` call.

        Keys that ``load`` does not return are absent from the answer (and not
        cached). Keys another caller is already loading are awaited, not reloaded;
        when that load fails, its error is raised here too. A cancelled caller stops
        waiting; the load goes on for the others (and is cached).
        """
        now = time.monotonic()
        if now >= self._sweep_at:
            self._expire(now)
        values = self._values
        found: dict[K, V] = {}
        waiting: dict[K, asyncio.Task[dict[K, V]]] = {}
        missing: list[K] = []
        loading = self._loading
        for key in keys:
            entry = values.get(key)
            if entry is not None and entry[0] > now:
                found[key] = entry[1]
            elif key in loading:
                waiting[key] = loading[key]
            elif key not in found:
                missing.append(key)
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            task = asyncio.get_running_loop().create_task(self._load(missing, load))
            self._loads.add(task)
            task.add_done_callback(self._loaded)
            for key in missing:
                loading[key] = task
                waiting[key] = task
        if waiting:
            # Each load once, whatever the number of keys this caller awaits from it.
            results: dict[asyncio.Task[dict[K, V]], dict[K, V]] = {}
            for task in waiting.values():
                if task not in results:
                    results[task] = await asyncio.shield(task)
            for key, task in waiting.items():
                value = results[task].get(key)
                if value is not None:
                    found[key] = value
        return found

    async def _load(
        self, keys: list[K], load: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> dict[K, V]:
        # The task copied its first caller's context: the trace stays, the deadline goes.
        # The load is the cache's, and one caller's deadline must not cut it for the others.
        call = current_call()
        if call is not None and call.deadline is not None:
            set_current_call(replace(call, deadline=None))
        try:
            loaded = await load(keys)
        finally:
            for key in keys:
                self._loading.pop(key, None)
        now = time.monotonic()
        for key in keys:
            value = loaded.get(key)
            if value is not None:
                self.put(key, value, now)
        return loaded

    def _loaded(self, task: asyncio.Task[dict[K, V]]) -> None:
        self._loads.discard(task)
        # A failed load whose waiters were all cancelled: its error is seen here.
        if not task.cancelled():
            task.exception()

    async def close(self) -> None:
        """Cancel the loads in flight and wait for them to end."""
        loads = list(self._loads)
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
