"""recommender: consumes refresh requests and interactions; writes ranked feed versions.

Every instance fetches from the same durable consumers, so the instances form one
consumer group: each refresh request is ranked by one of them. A refresh is acked
only after the new version is stored and ``feed.ready`` is acknowledged by the stream.
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np

from cellwork import Client, NotFound, Service, ServiceSettings, Unavailable
from cellwork.data import open_engine
from cellwork.events import Delivery, Publisher
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.recommender.domain import KIND_WEIGHT, ItemIndex, UserSignals, rank
from learnfeed.recommender.store import RecommenderStore
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    feed_pb2,
    feed_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
)

SERVICE_NAME = "recommender"
INDEX_REFRESH_SECONDS = 300.0
POPULARITY_TTL = 5.0

_log = get_logger("learnfeed.recommender")


class Ranker:
    """Holds the catalog index and popularity; ranks one user at a time."""

    def __init__(self, store: RecommenderStore, feed_size: int) -> None:
        self.store = store
        self.feed_size = feed_size
        self.index: ItemIndex | None = None
        self.ready = asyncio.Event()
        self._popularity = np.zeros(0)
        self._popularity_at = 0.0

    async def load_index(self, catalog: Client[catalog_pb2_grpc.CatalogStub]) -> int:
        """Page through the whole catalog into arrays; returns the number of items."""
        rows: list[tuple[str, str, str, float]] = []
        after = ""
        while True:
            page = await catalog.call(
                "ListItems",
                catalog_pb2.ListItemsRequest(after=after, limit=1000),
                timeout=5.0,
                idempotent=True,
            )
            rows.extend((i.id, i.educator_id, i.topic, i.created_at) for i in page.items)
            if not page.next:
                break
            after = page.next
        self.index = ItemIndex(rows)
        self._popularity_at = 0.0
        self.ready.set()
        return len(rows)

    async def popularity(self) -> np.ndarray:
        """Popularity per index row, re-read at most every few seconds."""
        assert self.index is not None
        now = time.monotonic()
        if now - self._popularity_at > POPULARITY_TTL or len(self._popularity) != len(self.index):
            scores = await self.store.popularity()
            self._popularity = np.array([scores.get(i, 0.0) for i in self.index.ids])
            self._popularity_at = now
        return self._popularity

    async def rank_user(self, followed: list[str], user_id: str) -> list[tuple[str, float]]:
        if self.index is None or not len(self.index):
            raise Unavailable("catalog index not loaded yet")
        signals = UserSignals(frozenset(followed), tuple(await self.store.interactions(user_id)))
        return rank(self.index, signals, await self.popularity(), time.time(), self.feed_size)


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: database, ranker, consumers and periodic jobs."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    service.add_streams(*contract.streams(cfg.refresh_window))
    engine = open_engine(cfg.database(service.name))
    store = RecommenderStore(engine)
    ranker = Ranker(store, cfg.feed_size)
    up = Upstreams()

    @service.on_start
    async def prepare(svc: Service) -> None:
        await store.migrate()
        up.catalog = await svc.client("catalog", catalog_pb2_grpc.CatalogStub)
        up.identity = await svc.client("identity", identity_pb2_grpc.IdentityStub)
        up.feed = await svc.client("feed", feed_pb2_grpc.FeedStub)

    @service.background
    async def keep_index(svc: Service) -> None:
        delay = 0.5
        while True:
            try:
                count = await ranker.load_index(up.catalog)
                _log.info("recommender.index_loaded", items=count)
                delay = INDEX_REFRESH_SECONDS if count else 2.0
            except Exception as exc:
                _log.warning("recommender.index_load_failed", error=str(exc))
                delay = min(delay * 2, 10.0)
            await asyncio.sleep(delay)

    @service.consume(
        stream=contract.FEED_STREAM,
        durable="recommender",
        subject=contract.REFRESH_REQUESTED,
        concurrency=8,
        ack_wait=30.0,
    )
    async def on_refresh(delivery: Delivery) -> None:
        event = events_pb2.FeedRefreshRequested.FromString(delivery.data)
        await asyncio.wait_for(ranker.ready.wait(), timeout=10.0)
        try:
            follows = await up.identity.call(
                "ListFollows",
                identity_pb2.ListFollowsRequest(user_id=event.user_id),
                timeout=2.0,
                idempotent=True,
            )
            followed = list(follows.educator_ids)
        except NotFound:
            followed = []
        items = await ranker.rank_user(followed, event.user_id)
        stored = await up.feed.call(
            "PutFeed",
            feed_pb2.PutFeedRequest(
                user_id=event.user_id,
                items=[feed_pb2.FeedItem(item_id=i, score=s) for i, s in items],
                generated_at=time.time(),
            ),
            timeout=2.0,
        )
        ready = events_pb2.FeedReady(
            user_id=event.user_id,
            version=stored.version,
            generated_at=time.time(),
            requested_at=event.requested_at,
        )
        await publisher_of(service).publish(
            contract.feed_ready(event.user_id),
            ready.SerializeToString(),
            msg_id=f"ready.{event.user_id}.{stored.version}",
        )
        await store.mark_ranked(event.user_id)

    @service.consume(
        stream=contract.INTERACTIONS_STREAM,
        durable="recommender-interactions",
        subject=f"{contract.INTERACTION_PREFIX}.*",
    )
    async def on_interaction(delivery: Delivery) -> None:
        event = events_pb2.Interaction.FromString(delivery.data)
        event_id = delivery.msg_id or f"{event.user_id}:{event.item_id}:{event.kind}:{event.at}"
        await store.record_interaction(
            event_id,
            event.user_id,
            event.item_id,
            event.kind,
            event.at,
            KIND_WEIGHT.get(event.kind, 0.0),
        )

    @service.background
    async def keep_popular_feed(svc: Service) -> None:
        """The global ranking (popular and recent), the cold-start feed's other half."""
        written = -1.0
        while True:
            await asyncio.sleep(2.0 if written < 0 else 30.0)
            if ranker.index is None:
                continue
            try:
                popularity = await ranker.popularity()
                total = float(popularity.sum())
                if total == written:
                    continue
                items = rank(
                    ranker.index, UserSignals(frozenset(), ()), popularity, time.time(), 100
                )
                await up.feed.call(
                    "PutFeed",
                    feed_pb2.PutFeedRequest(
                        user_id=contract.POPULAR_FEED,
                        items=[feed_pb2.FeedItem(item_id=i, score=s) for i, s in items],
                    ),
                    timeout=2.0,
                )
                written = total
            except Exception as exc:
                _log.warning("recommender.popular_failed", error=str(exc))

    @service.background
    async def periodic_recompute(svc: Service) -> None:
        interval = cfg.recompute_interval
        while True:
            # Every instance wakes on the same grid, so the pass's dedupe ids (named after
            # the interval) coalesce the passes of all instances into one.
            await asyncio.sleep(interval - time.time() % interval + random.uniform(0, 1))
            try:
                await recompute_all(store, publisher_of(svc), cfg.recompute_batch, interval)
            except Exception as exc:  # the next interval tries again
                _log.error("recommender.recompute_failed", error=str(exc))

    @service.on_stop
    async def close_database(_: Service) -> None:
        await engine.dispose()

    return service


class Upstreams:
    """The recommender's clients, connected on start."""

    catalog: Client[catalog_pb2_grpc.CatalogStub]
    identity: Client[identity_pb2_grpc.IdentityStub]
    feed: Client[feed_pb2_grpc.FeedStub]


def publisher_of(service: Service) -> Publisher:
    if service.publisher is None:
        raise Unavailable("the service is not started")
    return service.publisher


async def recompute_all(
    store: RecommenderStore, publisher: Publisher, batch: int, interval: float
) -> int:
    """Ask for a refresh of every known user, ``batch`` at a time; returns how many.

    The dedupe id names the pass, so two instances running it at once ask once.
    """
    total = await store.count_users()
    epoch = int(time.time() // interval)
    done, after = 0, ""
    started = time.monotonic()
    _log.info("recommender.recompute_started", users=total)
    while True:
        users = await store.users_after(after, batch)
        if not users:
            break
        now = time.time()
        await asyncio.gather(
            *(
                publisher.publish(
                    contract.REFRESH_REQUESTED,
                    events_pb2.FeedRefreshRequested(
                        user_id=u, reason="periodic", requested_at=now
                    ).SerializeToString(),
                    msg_id=f"periodic.{u}.{epoch}",
                )
                for u in users
            )
        )
        done += len(users)
        after = users[-1]
        _log.info("recommender.recompute_progress", done=done, total=total)
    _log.info(
        "recommender.recompute_finished",
        users=done,
        seconds=round(time.monotonic() - started, 2),
    )
    return done
