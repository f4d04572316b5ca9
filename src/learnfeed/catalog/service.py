"""catalog's gRPC handlers (thin) and its composition root."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cellwork import InvalidArgument, Service, ServiceSettings
from cellwork.cache import LocalCache
from cellwork.observability import get_logger
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.store import MIGRATIONS, CatalogStore, Item
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import catalog_pb2 as pb
from learnfeed.v1 import catalog_pb2_grpc as rpc

SERVICE_NAME = "catalog"
PROTO_NAME = "learnfeed.v1.Catalog"
MAX_IDS = 500
MAX_PAGE = 1000

_log = get_logger("learnfeed.catalog")


def item_message(item: Item) -> pb.Item:
    return pb.Item(**asdict(item))


class CatalogServicer(rpc.CatalogServicer):
    """Reads of educators and items; item reads go through an in-process cache."""

    def __init__(self, store: CatalogStore, cache_ttl: float) -> None:
        self.store = store
        self.cache: LocalCache[str, pb.Item] = LocalCache(maxsize=50_000, ttl=cache_ttl)

    async def _load(self, ids: list[str]) -> dict[str, pb.Item]:
        return {k: item_message(v) for k, v in (await self.store.items(ids)).items()}

    async def GetItems(self, request: pb.GetItemsRequest, context: Any) -> pb.ItemList:
        if len(request.ids) > MAX_IDS:
            raise InvalidArgument(f"at most {MAX_IDS} ids a call")
        found = await self.cache.get_many(request.ids, self._load)
        return pb.ItemList(items=[found[i] for i in request.ids if i in found])

    async def GetEducators(self, request: pb.GetEducatorsRequest, context: Any) -> pb.EducatorList:
        if len(request.ids) > MAX_IDS:
            raise InvalidArgument(f"at most {MAX_IDS} ids a call")
        found = await self.store.educators(list(request.ids))
        return pb.EducatorList(
            educators=[pb.Educator(**asdict(found[i])) for i in request.ids if i in found]
        )

    async def ListItems(self, request: pb.ListItemsRequest, context: Any) -> pb.ItemList:
        limit = min(request.limit or 500, MAX_PAGE)
        items = await self.store.page(request.after, limit)
        next_after = items[-1].id if len(items) == limit else ""
        return pb.ItemList(items=[item_message(i) for i in items], next=next_after)

    async def ListRecent(self, request: pb.ListRecentRequest, context: Any) -> pb.ItemList:
        limit = min(request.limit or 100, MAX_PAGE)
        return pb.ItemList(items=[item_message(i) for i in await self.store.recent(limit)])


class DemoSeed:
    """Seeds the deterministic demo catalog (idempotent: only what is missing)."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    async def __call__(self) -> None:
        educators, items = demo_catalog()
        added = await self.store.seed(educators, items)
        _log.info("catalog.demo_seeded", items_added=added, items=len(items))


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: the database (seeded with the demo catalog in demo mode)."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    store = CatalogStore(service.add_database(cfg.database(service.name), MIGRATIONS))
    service.add_grpc(
        rpc.add_CatalogServicer_to_server,
        CatalogServicer(store, cfg.catalog_cache_ttl),
        PROTO_NAME,
    )
    if cfg.demo:
        service.on_start(DemoSeed(store))
    return service
