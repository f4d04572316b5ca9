"""The ranker: the catalog index and popularity held in memory, one user ranked at a time."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from cellwork import Unavailable
from learnfeed.recommender.domain import ItemIndex, UserSignals, rank
from learnfeed.recommender.store import RecommenderStore
from learnfeed.v1 import catalog_pb2
from learnfeed.v1.catalog_client import CatalogClient

POPULARITY_TTL = 5.0  # seconds a popularity snapshot is reused


class Ranker:
    """Holds the catalog index and popularity; ranks one user at a time."""

    def __init__(self, store: RecommenderStore, catalog: CatalogClient, feed_size: int) -> None:
        self.store = store
        self.catalog = catalog
        self.feed_size = feed_size
        self.index: ItemIndex | None = None
        self.ready = asyncio.Event()
        self._popularity = np.zeros(0)
        self._popularity_at = 0.0

    async def load_index(self) -> int:
        """Page through the whole catalog into arrays; returns the number of items."""
        rows: list[tuple[str, str, str, float]] = []
        after = ""
        while True:
            page = await self.catalog.list_items(
                catalog_pb2.ListItemsRequest(after=after, limit=1000), timeout=5.0
            )
            rows.extend((i.id, i.educator_id, i.topic, i.created_at) for i in page.items)
            if not page.next:
                break
            after = page.next
        self.index = ItemIndex(rows)
        self._popularity_at = 0.0
        self.ready.set()
        return len(rows)

    def loaded(self) -> ItemIndex:
        """The index; raises Unavailable until the catalog has been loaded."""
        if self.index is None or not len(self.index):
            raise Unavailable("catalog index not loaded yet")
        return self.index

    async def popularity(self) -> np.ndarray:
        """Popularity per index row, re-read at most every few seconds."""
        index = self.loaded()
        now = time.monotonic()
        if now - self._popularity_at > POPULARITY_TTL or len(self._popularity) != len(index):
            scores = await self.store.popularity()
            self._popularity = np.array([scores.get(i, 0.0) for i in index.ids])
            self._popularity_at = now
        return self._popularity

    async def rank_user(self, followed: list[str], user_id: str) -> list[tuple[str, float]]:
        """The user's ranked feed: (item id, score), best first."""
        index = self.loaded()
        signals = UserSignals(frozenset(followed), tuple(await self.store.interactions(user_id)))
        return rank(index, signals, await self.popularity(), time.time(), self.feed_size)

    async def rank_popular(self, size: int) -> tuple[float, list[tuple[str, float]]]:
        """The global ranking (no user signals), and the popularity total it saw."""
        index = self.loaded()
        popularity = await self.popularity()
        items = rank(index, UserSignals(frozenset(), ()), popularity, time.time(), size)
        return float(popularity.sum()), items
