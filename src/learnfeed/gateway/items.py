"""Catalog items as the gateway serves them: rendered JSON, kept at the caller.

Items rarely change, so each gateway keeps them rendered (a read then costs a dict
lookup, not a hop and a JSON build). With ``CELLWORK_REDIS_URL`` the gateways share
them through Redis: a new instance warms from there instead of from the catalog.
``CELLWORK_GATEWAY_ITEMS_CACHE=false`` keeps nothing: every read asks the catalog.

A feed page never waits long for the catalog (``rendered``): past the enrichment
deadline, or when the catalog fails, the page goes out with the items this instance
holds, and the others bare (id and score). With the cache on, the catalog's answer,
when it comes, is still kept for the next read: the load runs as the cache's own task
under ``load_timeout`` and only the page stops waiting for it. With the cache off
there is nothing to keep, so the catalog calls themselves carry the enrichment
deadline as their gRPC deadline: a slow catalog answers DEADLINE_EXCEEDED, which its
breaker counts and the balancer charges to the instance. (Cut off by an asyncio timer
instead, the calls ended as cancellations, which count for neither: with the cache off
the breaker never opened on a catalog slowed past the deadline.)
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

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
        self._load_cached = partial(self._load, timeout=load_timeout)

    async def get(self, ids: list[str]) -> dict[str, bytes]:
        """Items by id, as rendered JSON; unknown ids are absent. Raises the catalog's
        errors (``Unavailable``, ``DeadlineExceeded``...)."""
        if self._cache is None:
            return await self._load(ids, self.load_timeout)
        return await self._cache.get_many(ids, self._load_cached)

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
            if self._cache is None:
                # The calls end at the deadline themselves (see the module docstring).
                found.update(await self._load(missing, self.enrich_timeout))
            else:
                # A timer only when the catalog is asked: it costs ~6 us a read.
                async with asyncio.timeout(self.enrich_timeout):
                    found.update(await self._cache.get_many(missing, self._load_cached))
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

    async def _load(self, ids: list[str], timeout: float) -> dict[str, bytes]:
        """The items of ``ids`` from the catalog, each call under ``timeout`` seconds
        (capped by the request's deadline, when there is one). Raises the first error
        of the catalog's; the other calls are cancelled and awaited first."""
        # The balancer spreads the chunks over the catalog's instances, so a cold page
        # costs one round trip. A cached load runs as the cache's own task, without the
        # request's deadline: ``timeout`` (``load_timeout``) bounds it.
        get_items = self.catalog.get_items
        if len(ids) <= ENRICH_CHUNK:  # one call: no tasks to own
            reply = await get_items(catalog_pb2.GetItemsRequest(ids=ids), timeout=timeout)
            return {item.id: item_json(item) for item in reply.items}
        try:
            # A task group, not gather: when one chunk fails, its siblings are
            # cancelled and awaited here instead of running on, unowned.
            async with asyncio.TaskGroup() as group:
                calls = [
                    group.create_task(
                        get_items(
                            catalog_pb2.GetItemsRequest(ids=ids[n : n + ENRICH_CHUNK]),
                            timeout=timeout,
                        )
                    )
                    for n in range(0, len(ids), ENRICH_CHUNK)
                ]
        except BaseExceptionGroup as failed:
            # Callers handle the catalog's errors one by one (CATALOG_FAILURES).
            raise failed.exceptions[0] from None
        return {item.id: item_json(item) for call in calls for item in call.result().items}

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()
