"""Catalog items as the gateway serves them: rendered JSON, kept at the caller.

Items rarely change, so each gateway keeps them rendered (a read then costs a dict
lookup, not a hop and a JSON build). With ``CELLWORK_REDIS_URL`` the gateways share
them through Redis: a new instance warms from there instead of from the catalog.
``CELLWORK_GATEWAY_ITEMS_CACHE=false`` keeps nothing: every read asks the catalog.

A feed page never waits long for the catalog (``rendered``): past the enrichment
deadline, or when the catalog fails, the page goes out with the items this instance
holds, and the others bare (id and score). The catalog's answer, when it comes, is
still kept for the next read.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter

from cellwork import DeadlineExceeded, Internal, Overloaded, Unavailable
from cellwork.cache import LocalCache, RedisTier, TieredCache
from learnfeed.gateway.render import item_json
from learnfeed.v1 import catalog_pb2
from learnfeed.v1.catalog_client import CatalogClient

ENRICH_CHUNK = 10  # item ids per concurrent catalog call

# The catalog's own failures, as a client's ``fallback=`` takes them: a page degrades on
# these; an error of the gateway's own making (InvalidArgument...) is not hidden.
CATALOG_FAILURES = (Unavailable, DeadlineExceeded, Overloaded, Internal)

UNENRICHED_PAGES = Counter(
    "learnfeed_gateway_unenriched_pages_total",
    "Feed pages served with bare items because the catalog failed or missed its deadline",
    ["reason"],
)


class Items:
    """Items by id, rendered; misses fetched from the catalog in concurrent chunks.

    ``keep=False`` turns the cache (both tiers) off. ``load_timeout`` bounds each catalog
    load, ``enrich_timeout`` how long a feed page waits for one (``rendered``).
    """

    def __init__(
        self,
        catalog: CatalogClient,
        ttl: float,
        redis_url: str = "",
        max_bytes: int = 64 * 2**20,
        *,
        keep: bool = True,
        enrich_timeout: float = 0.2,
        load_timeout: float = 2.0,
    ) -> None:
        self.catalog = catalog
        self.enrich_timeout = enrich_timeout
        self.load_timeout = load_timeout
        self._cache: TieredCache | None = None
        if keep:
            shared = RedisTier.from_url(redis_url, "learnfeed:item", ttl) if redis_url else None
            # Values are bytes: their size is exact (``shallow_size``).
            local: LocalCache[str, bytes] = LocalCache(
                maxsize=100_000, ttl=ttl, max_bytes=max_bytes
            )
            self._cache = TieredCache(local, shared)

    async def get(self, ids: list[str]) -> dict[str, bytes]:
        """Items by id, as rendered JSON; unknown ids are absent. Raises the catalog's
        errors (``Unavailable``, ``DeadlineExceeded``...)."""
        if self._cache is None:
            return await self._load(ids)
        return await self._cache.get_many(ids, self._load)

    async def rendered(self, ids: list[str]) -> tuple[dict[str, bytes], bool]:
        """Items by id for a feed page, and whether the catalog answered for every one.

        Waits at most ``enrich_timeout`` for the catalog. When it fails or does not answer
        in time: the items this instance holds, and False (the others are unknown, not
        absent from the catalog). Raises nothing of the catalog's.
        """
        found = self.held(ids)
        if len(found) == len(ids):
            return found, True  # the usual read: no timer, no hop
        missing = [item_id for item_id in ids if item_id not in found]
        try:
            # A timer only when the catalog is asked: it costs ~6 us a read.
            async with asyncio.timeout(self.enrich_timeout):
                found.update(await self.get(missing))
        except TimeoutError:
            UNENRICHED_PAGES.labels(DeadlineExceeded.error_code).inc()
            return found, False
        except CATALOG_FAILURES as exc:
            UNENRICHED_PAGES.labels(exc.error_code).inc()
            return found, False
        return found, True

    def held(self, ids: list[str]) -> dict[str, bytes]:
        """The items of ``ids`` this instance holds now (no I/O; nothing when not keeping)."""
        if self._cache is None:
            return {}
        get = self._cache.local.get
        now = time.monotonic()
        return {item_id: value for item_id in ids if (value := get(item_id, now)) is not None}

    async def _load(self, ids: list[str]) -> dict[str, bytes]:
        # The balancer spreads the chunks over the catalog's instances, so a cold page
        # costs one round trip. A cached load runs as the cache's own task, without the
        # request's deadline: ``load_timeout`` bounds it.
        chunks = [ids[n : n + ENRICH_CHUNK] for n in range(0, len(ids), ENRICH_CHUNK)]
        replies = await asyncio.gather(
            *(
                self.catalog.get_items(
                    catalog_pb2.GetItemsRequest(ids=chunk), timeout=self.load_timeout
                )
                for chunk in chunks
            )
        )
        return {item.id: item_json(item) for reply in replies for item in reply.items}

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()
