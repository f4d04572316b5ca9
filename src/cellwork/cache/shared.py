"""The shared tier: Redis behind each instance's in-process cache.

``TieredCache`` looks a key up in the instance's ``LocalCache`` first, then in Redis,
and only then calls the loader (the service that owns the data); what the loader
returns is written to both tiers. A new or restarted instance warms from Redis
instead of from the owning service. Redis being down costs a warning, not an
answer: the lookup falls through to the loader.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cellwork.cache.local import LocalCache
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.cache")
_WARN_EVERY = 10.0  # seconds between warnings while Redis stays unreachable


class RedisTier:
    """Byte values under ``namespace:key`` in Redis, each with a time to live."""

    def __init__(self, redis: Redis, namespace: str, ttl: float, timeout: float = 0.05) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_ms = max(int(ttl * 1000), 1)
        self.timeout = timeout
        self._warned_at = 0.0

    @classmethod
    def from_url(cls, url: str, namespace: str, ttl: float) -> RedisTier:
        """A tier on the Redis at ``url``; no connection is made until first use."""
        client = Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        return cls(client, namespace, ttl)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > _WARN_EVERY:
            self._warned_at = now
            _log.warning("cache.redis_unavailable", namespace=self.namespace, error=str(exc))

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The values Redis holds for ``keys``; {} when Redis cannot be reached."""
        if not keys:
            return {}
        try:
            values = await self.redis.mget([self._key(k) for k in keys])
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return {}
        return {
            k: v if isinstance(v, bytes) else str(v).encode()
            for k, v in zip(keys, values, strict=True)
            if v is not None
        }

    async def put_many(self, values: dict[str, bytes]) -> None:
        """Store ``values`` with the tier's time to live (best effort)."""
        if not values:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(self._key(key), value, px=self.ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn(exc)

    async def close(self) -> None:
        await self.redis.aclose()


class TieredCache:
    """In-process cache in front of an optional Redis tier, in front of the loader."""

    def __init__(self, local: LocalCache[str, bytes], shared: RedisTier | None = None) -> None:
        self.local = local
        self.shared = shared

    async def get_many(
        self, keys: Iterable[str], load: Callable[[list[str]], Awaitable[dict[str, bytes]]]
    ) -> dict[str, bytes]:
        """Values for ``keys`` from the nearest tier that has them (single-flight locally)."""
        shared = self.shared
        if shared is None:
            return await self.local.get_many(keys, load)

        async def through_shared(missing: list[str]) -> dict[str, bytes]:
            found = await shared.get_many(missing)
            rest = [k for k in missing if k not in found]
            if rest:
                loaded = await load(rest)
                await shared.put_many(loaded)
                found.update(loaded)
            return found

        return await self.local.get_many(keys, through_shared)

    async def close(self) -> None:
        """Cancel the loads in flight; close the Redis connection."""
        await self.local.close()
        if self.shared is not None:
            await self.shared.close()
