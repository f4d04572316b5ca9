"""Catalog items as the gateway serves them: rendered JSON, kept at the caller.

Items rarely change, so each gateway keeps them rendered (a read then costs a dict
lookup, not a hop and a JSON build). With ``CELLWORK_REDIS_URL`` the gateways share
them through Redis: a new instance warms from there instead of from the catalog.
"""

from __future__ import annotations

import asyncio

from cellwork.cache import LocalCache, RedisTier, TieredCache
from learnfeed.gateway.render import item_json
from learnfeed.v1 import catalog_pb2
from learnfeed.v1.catalog_client import CatalogClient

ENRICH_CHUNK = 10  # item ids per concurrent catalog call


class Items:
    """Items by id, rendered; misses fetched from the catalog in concurrent chunks."""

    def __init__(
        self, catalog: CatalogClient, ttl: float, redis_url: str = "", max_bytes: int = 64 * 2**20
    ) -> None:
        self.catalog = catalog
        shared = RedisTier.from_url(redis_url, "learnfeed:item", ttl) if redis_url else None
        # Values are bytes: their size is exact (``shallow_size``).
        local: LocalCache[str, bytes] = LocalCache(maxsize=100_000, ttl=ttl, max_bytes=max_bytes)
        self._cache = TieredCache(local, shared)

    async def get(self, ids: list[str]) -> dict[str, bytes]:
        """Items by id, as rendered JSON; unknown ids are absent."""
        return await self._cache.get_many(ids, self._load)

    async def _load(self, ids: list[str]) -> dict[str, bytes]:
        # The balancer spreads the chunks over the catalog's instances, so a cold page
        # costs one round trip.
        chunks = [ids[n : n + ENRICH_CHUNK] for n in range(0, len(ids), ENRICH_CHUNK)]
        replies = await asyncio.gather(
            *(self.catalog.get_items(catalog_pb2.GetItemsRequest(ids=chunk)) for chunk in chunks)
        )
        return {item.id: item_json(item) for reply in replies for item in reply.items}

    async def close(self) -> None:
        await self._cache.close()
