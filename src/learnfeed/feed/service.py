"""feed's gRPC handlers (thin), its interaction consumer, and its composition root."""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import replace
from typing import Any

from cellwork import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Service,
    ServiceSettings,
    Unavailable,
    current_call,
)
from cellwork.cache import LocalCache
from cellwork.events import Delivery, Poison, Publisher
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.feed.domain import BurstCounter
from learnfeed.feed.events import Announcements
from learnfeed.feed.store import MIGRATIONS, FeedStore
from learnfeed.freshness import (
    CurrentVersions,
    PackedFeed,
    RefreshCoalescer,
    is_stale,
    parse_changed,
)
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import catalog_pb2, events_pb2
from learnfeed.v1 import feed_pb2 as pb
from learnfeed.v1 import feed_pb2_grpc as rpc
from learnfeed.v1.catalog_client import CatalogClient

_log = get_logger("learnfeed.feed")

SERVICE_NAME = "feed"
PROTO_NAME = "learnfeed.v1.Feed"
COLD_SIZE = 100


# The catalog's failures (not the request's): the cold start answers without it.
_CATALOG_DOWN = (Unavailable, DeadlineExceeded, ResourceExhausted, Internal)


class ColdStart:
    """The feed of a user who has none yet: popular and recent items, interleaved.

    When the catalog fails (down, slow, shedding), the popular ranking alone, which
    feed holds itself; not cached, so the recent items are back with the catalog. Its
    client's metrics and breaker show the failures; a read does not log them.
    """

    def __init__(self, store: FeedStore, catalog: CatalogClient, ttl: float = 30.0) -> None:
        self.store = store
        self.catalog = catalog
        self._cache: LocalCache[str, list[tuple[str, float]]] = LocalCache(maxsize=1, ttl=ttl)

    async def items(self) -> list[tuple[str, float]]:
        try:
            found = await self._cache.get_many(["cold"], self._load)
        except _CATALOG_DOWN:
            return await self._ranked([])
        return found.get("cold", [])

    async def _load(self, _: list[str]) -> dict[str, list[tuple[str, float]]]:
        reply = await self.catalog.list_recent(
            catalog_pb2.ListRecentRequest(limit=COLD_SIZE), timeout=2.0
        )
        return {"cold": await self._ranked([item.id for item in reply.items])}

    async def _ranked(self, recent: list[str]) -> list[tuple[str, float]]:
        popular = await self.store.get(contract.POPULAR_FEED)
        ranked = interleave([i for i, _ in popular.items] if popular else [], recent)
        return [(item, 1.0 - n / COLD_SIZE) for n, item in enumerate(ranked)]


def interleave(first: list[str], second: list[str], size: int = COLD_SIZE) -> list[str]:
    """Alternate two rankings, without repeats, up to ``size`` ids."""
    seen: set[str] = set()
    out: list[str] = []
    for pair in zip(first + [""] * len(second), second + [""] * len(first), strict=False):
        for item in pair:
            if item and item not in seen and len(out) < size:
                seen.add(item)
                out.append(item)
    return out


# Kept for users without a version, so their reads do not each cost a database read.
_NO_VERSION = PackedFeed(0, 0.0, "", array("f"))


class FeedServicer(rpc.FeedServicer):
    """Answers at once with the current version; asks for a fresher one after.

    Current versions are cached in the instance, packed and bounded by ``cache_bytes``
    (a database read costs ~0.4 ms of CPU here, the cache lookup ~1 us). An instance
    that stores a version announces it from its outbox (``events.py``): siblings and
    gateways drop their copies (``_learnfeed.feed.changed.<user>``) before
    ``feed.ready`` goes out, and PutFeed answers once both went out (or after a
    bounded wait: the relay sends them later).
    """

    def __init__(
        self,
        store: FeedStore,
        cold: ColdStart,
        coalescer: RefreshCoalescer,
        publisher: Publisher,
        announcements: Announcements,
        cache_bytes: int = 192 * 2**20,
    ) -> None:
        self.store = store
        self.cold = cold
        self.coalescer = coalescer
        self.publisher = publisher
        self.announcements = announcements
        self.versions: CurrentVersions[PackedFeed] = CurrentVersions(
            ttl=300.0, max_bytes=cache_bytes, size=PackedFeed.nbytes
        )

    async def current(self, user_id: str) -> PackedFeed | None:
        """The user's current version (cached), or None when there is none yet."""
        version = self.versions.get(user_id)
        if version is None:
            stored = await self.store.get(user_id)
            if stored is None:
                version = _NO_VERSION
            else:
                version = PackedFeed.pack(stored.version, stored.generated_at, stored.items)
                if version is None:  # stored before ids were checked: served as none
                    _log.warning("feed.version_unreadable", version=stored.version)
                    return None
            self.versions.keep(user_id, version)
        return None if version is _NO_VERSION else version

    async def on_changed(self, subject: str, data: bytes) -> None:
        """An instance stored a new version: older copies here stop being served."""
        user_id = contract.user_of(subject, contract.FEED_CHANGED_PREFIX)
        self.versions.announce(user_id, parse_changed(data)[1])

    async def forget_versions(self) -> None:
        """After a NATS reconnect announcements may have been missed: drop every copy."""
        self.versions.clear()

    def request_refresh(self, user_id: str, reason: str, now: float | None = None) -> bool:
        """Queue ``feed.refresh.requested`` unless this window already asked; True if queued."""
        now = time.time() if now is None else now
        msg_id = self.coalescer.should_request(user_id, now)
        if msg_id is None:
            return False
        event = events_pb2.FeedRefreshRequested(user_id=user_id, reason=reason, requested_at=now)
        try:
            self.publisher.publish_soon(
                contract.REFRESH_REQUESTED, event.SerializeToString(), msg_id
            )
        except ResourceExhausted:
            # The stream is unreachable and the queue full: the read still succeeds,
            # and the window is not marked, so a later read asks again.
            self.coalescer.forget(user_id)
            _log.warning("feed.refresh_dropped", reason="event queue full")
            return False
        return True

    async def GetFeed(self, request: pb.GetFeedRequest, context: Any) -> pb.FeedPage:
        if not request.user_id:
            raise InvalidArgument("user_id is required")
        if request.offset < 0 or not 0 <= request.limit <= contract.FEED_PAGE_MAX:
            raise InvalidArgument(f"offset must be >= 0 and limit 0..{contract.FEED_PAGE_MAX}")
        limit = request.limit or 20
        now = time.time()
        version = await self.current(request.user_id)
        if version is None:
            cold = await self.cold.items()
            page = cold[request.offset : request.offset + limit]
            total, number, generated = len(cold), 0, now
        else:
            page = version.page(request.offset, limit)
            total, number, generated = version.total, version.version, version.generated_at
        reply = pb.FeedPage(
            user_id=request.user_id,
            version=number,
            generated_at=generated,
            stale=is_stale(generated, now, self.coalescer.window, cold=version is None),
            items=[pb.FeedItem(item_id=i, score=s) for i, s in page],
            total=total,
        )
        # The answer is built; the refresh is queued and published after it (step 6).
        self.request_refresh(request.user_id, "read", now)
        return reply

    async def PutFeed(self, request: pb.PutFeedRequest, context: Any) -> pb.PutFeedResponse:
        if not request.user_id:
            raise InvalidArgument("user_id is required")
        user_id = request.user_id
        items = [(i.item_id, float(i.score)) for i in request.items]
        generated = request.generated_at or time.time()
        packed = PackedFeed.pack(0, generated, items)
        if packed is None:
            raise InvalidArgument("item ids must not contain the control character U+001F")
        stored = await self.store.put_version(
            user_id,
            items,
            generated,
            refresh_id=request.refresh_id,
            announce=self.announcements.of(user_id, generated, request.requested_at),
        )
        if stored.new:
            self.versions.announce(user_id, stored.version)
            self.versions.keep(user_id, replace(packed, version=stored.version))
        call = current_call()
        await self.announcements.sent(
            stored.announcements, call.time_remaining() if call is not None else None
        )
        return pb.PutFeedResponse(version=stored.version)

    async def RequestRefresh(
        self, request: pb.RequestRefreshRequest, context: Any
    ) -> pb.RequestRefreshResponse:
        if not request.user_id:
            raise InvalidArgument("user_id is required")
        return pb.RequestRefreshResponse(
            requested=self.request_refresh(request.user_id, request.reason or "asked")
        )


class InteractionBursts:
    """Consumer of interactions: a burst of one user's interactions asks for a refresh.

    A redelivered interaction counts again: at worst a burst completes one interaction
    early, and the refresh it asks for is coalesced with the user's others.
    """

    def __init__(self, bursts: BurstCounter, feeds: FeedServicer) -> None:
        self.bursts = bursts
        self.feeds = feeds

    async def __call__(self, delivery: Delivery) -> None:
        event = events_pb2.Interaction.FromString(delivery.data)
        if not event.user_id:
            raise Poison("an interaction without user_id")
        if self.bursts.add(event.user_id):
            self.feeds.request_refresh(event.user_id, "interactions")


class ForgetRefreshes:
    """Background job: forget applied refresh ids older than ``retention`` seconds.

    A refresh is redelivered within the FEED stream's life of a message (a day) at the
    most, so ids older than that protect nothing. Every instance runs it; a DELETE that
    finds nothing costs nothing.
    """

    def __init__(self, store: FeedStore, retention: float) -> None:
        self.store = store
        self.retention = retention
        self.every = min(max(retention / 10, 1.0), 3600.0)

    async def __call__(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                forgotten = await self.store.forget_refreshes(time.time() - self.retention)
            except Exception as exc:  # the database blinked: the next round prunes
                _log.warning("feed.refresh_prune_failed", error=str(exc))
                continue
            if forgotten:
                _log.info("feed.refreshes_forgotten", count=forgotten)


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: database and outbox, cold-start source, coalescer, publisher,
    consumer, the pruning of applied refresh ids."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    service.add_streams(
        *contract.streams(
            cfg.refresh_window, interactions_max_bytes=cfg.interactions_stream_max_bytes
        )
    )
    engine = service.add_database(cfg.database(service.name), MIGRATIONS)
    store = FeedStore(engine)
    cold = ColdStart(store, service.client("catalog", CatalogClient))
    servicer = FeedServicer(
        store,
        cold,
        RefreshCoalescer(cfg.refresh_window),
        service.publisher,
        Announcements(service.add_outbox(engine), cfg.instance_id),
        cache_bytes=cfg.feed_cache_bytes,
    )
    service.add_grpc(rpc.add_FeedServicer_to_server, servicer, PROTO_NAME)
    service.subscribe(f"{contract.FEED_CHANGED_PREFIX}.*", servicer.on_changed)
    service.on_reconnect(servicer.forget_versions)
    service.add_consumer(
        InteractionBursts(BurstCounter(cfg.interaction_burst), servicer),
        stream=contract.INTERACTIONS_STREAM,
        durable="feed-interactions",
        subject=f"{contract.INTERACTION_PREFIX}.*",
        deliver_new=True,
    )
    service.background(ForgetRefreshes(store, cfg.refresh_id_retention))
    return service
