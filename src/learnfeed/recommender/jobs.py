"""The recommender's background jobs: keep the index, write the popular feed, the
periodic pass. Each is a small class with its collaborators; ``await job()`` runs it
until the service drains (then it is cancelled)."""

from __future__ import annotations

import asyncio
import random
import time

from cellwork.events import Publisher
from cellwork.observability import get_logger
from cellwork.resilience import backoff
from learnfeed import contract
from learnfeed.recommender.events import recompute_all
from learnfeed.recommender.ranker import Ranker
from learnfeed.recommender.store import RecommenderStore
from learnfeed.v1 import feed_pb2
from learnfeed.v1.feed_client import FeedClient

INDEX_REFRESH_SECONDS = 300.0
POPULAR_SIZE = 100
POPULAR_EVERY = 30.0  # seconds between writes of the popular feed (when it changed)

_log = get_logger("learnfeed.recommender")


class KeepIndex:
    """Loads the catalog index, retrying with back-off until it has items, then every
    few minutes (new items join the rankings)."""

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker

    async def __call__(self) -> None:
        failures = 0
        while True:
            try:
                count = await self.ranker.load_index()
                _log.info("recommender.index_loaded", items=count)
                failures = 0 if count else failures + 1
            except Exception as exc:
                failures += 1
                _log.warning("recommender.index_load_failed", error=str(exc))
            if failures:
                await asyncio.sleep(backoff(failures, base=0.5, cap=10.0))
            else:
                await asyncio.sleep(INDEX_REFRESH_SECONDS)


class WritePopularFeed:
    """Stores the global ranking (popular and recent) as the ``_popular`` feed, the
    cold-start feed's other half, whenever popularity moved."""

    def __init__(self, ranker: Ranker, feed: FeedClient) -> None:
        self.ranker = ranker
        self.feed = feed

    async def __call__(self) -> None:
        written = -1.0
        while True:
            await asyncio.sleep(2.0 if written < 0 else POPULAR_EVERY)
            if self.ranker.index is None:
                continue
            try:
                total, items = await self.ranker.rank_popular(POPULAR_SIZE)
                if total == written:
                    continue
                await self.feed.put_feed(
                    feed_pb2.PutFeedRequest(
                        user_id=contract.POPULAR_FEED,
                        items=[feed_pb2.FeedItem(item_id=i, score=s) for i, s in items],
                    ),
                    timeout=2.0,
                )
                written = total
            except Exception as exc:
                _log.warning("recommender.popular_failed", error=str(exc))


class PeriodicRecompute:
    """Asks for a refresh of every known user once per ``interval``."""

    def __init__(
        self, store: RecommenderStore, publisher: Publisher, batch: int, interval: float
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.batch = batch
        self.interval = interval

    async def __call__(self) -> None:
        while True:
            # Every instance wakes on the same grid, so the pass's dedupe ids (named after
            # the interval) coalesce the passes of all instances into one.
            await asyncio.sleep(self.interval - time.time() % self.interval + random.uniform(0, 1))
            try:
                await recompute_all(self.store, self.publisher, self.batch, self.interval)
            except Exception as exc:  # the next interval tries again
                _log.error("recommender.recompute_failed", error=str(exc))
