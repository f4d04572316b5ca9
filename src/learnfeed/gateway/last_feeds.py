"""The feed each user was last served, answered again (marked stale) when feed cannot.

A gateway's current versions (``freshness.CurrentVersions``, on while
``CELLWORK_GATEWAY_FEED_CACHE`` is) are dropped as soon as a newer version is announced
and do not exist at all with that switch off. What a user last saw is kept here, apart
from them and whatever the switch says, and stands in for GetFeed as its ``fallback=``:
when feed is unavailable, overloaded, too slow or broken (its instances all gone, its
breaker open, or the recommender long silent and feed with it), the user gets the page
they last saw, ``stale: true``, instead of an error. A user with nothing kept gets the
error (a 503 at once when no instance serves).

Per user one run of one version is kept (``KnownRun``): pages read of the same version
join into one run while they touch, up to ``MAX_RUN`` entries; a page of another version,
or one apart from the run, replaces it. Runs are packed (``PackedFeed``, ~2 KB for 100
entries, ~0.5 KB for a page of 20) and bounded by bytes
(``CELLWORK_GATEWAY_LAST_FEEDS_BYTES``), the oldest going first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from prometheus_client import Counter

from cellwork import CellworkError
from cellwork.cache import LocalCache
from learnfeed.freshness import PackedFeed
from learnfeed.v1 import feed_pb2

# Two of GetFeed's largest pages: the head of any feed a client pages through, and more
# than a default ranked feed (100 entries) holds.
MAX_RUN = 200
# How long a user's last feed may stand in: a day-old feed still beats an error, and a
# user not seen for a day makes room for those who are.
LAST_FEED_TTL = 86400.0
# Users kept at most, whatever their bytes: the byte budget is the bound that matters.
MAX_USERS = 1_000_000

STALE_FEEDS = Counter(
    "learnfeed_gateway_stale_feeds_total",
    "Feed pages answered from the user's last known feed because feed could not answer",
    ["reason"],
)


@dataclass(frozen=True, slots=True)
class KnownRun:
    """Entries ``start`` to ``end`` of one version of a user's feed (``total`` in all)."""

    feed: PackedFeed
    start: int
    total: int

    @property
    def end(self) -> int:
        return self.start + self.feed.total

    def same_version(self, other: KnownRun) -> bool:
        # Cold-start feeds are all version 0, each generated when read: the time tells
        # one from another.
        return (
            self.feed.version == other.feed.version
            and self.feed.generated_at == other.feed.generated_at
        )

    def holds(self, other: KnownRun) -> bool:
        """Whether every entry of ``other`` is already in this run."""
        return self.same_version(other) and self.start <= other.start and other.end <= self.end

    def page(self, offset: int, limit: int) -> list[tuple[str, float]] | None:
        """Entries ``offset`` to ``offset + limit`` as far as the run has them (a short
        page at its end); None when it has nothing at ``offset``. At the end of the whole
        version the page is empty, as feed would answer."""
        if offset == self.end == self.total:
            return []
        if not self.start <= offset < self.end:
            return None
        return self.feed.page(offset - self.start, limit)

    def nbytes(self) -> int:
        """What the run holds in memory (this object and its packed entries)."""
        return sys.getsizeof(self) + self.feed.nbytes()


def joined(kept: KnownRun | None, served: KnownRun) -> KnownRun:
    """What to keep once ``served`` was served: one run with ``kept`` when both are of one
    version and touch, and together hold at most ``MAX_RUN`` entries; else ``served``."""
    if kept is None or not kept.same_version(served):
        return served
    if kept.holds(served):
        return kept
    if served.start > kept.end or served.end < kept.start:
        return served
    start, end = min(kept.start, served.start), max(kept.end, served.end)
    if end - start > MAX_RUN:
        return served
    head = kept.feed.page(0, served.start - kept.start) if kept.start < served.start else []
    tail = kept.feed.page(served.end - kept.start, end - served.end)
    entries = [*head, *served.feed.entries(), *tail]
    packed = PackedFeed.pack(served.feed.version, served.feed.generated_at, entries)
    return served if packed is None else KnownRun(packed, start, served.total)


class LastFeeds:
    """The last run of each user's feed that was served, bounded by ``max_bytes``.

    Not thread-safe (the gateway's event loop owns it); ``now`` is monotonic seconds,
    the clock's by default.
    """

    def __init__(
        self, max_bytes: int, ttl: float = LAST_FEED_TTL, max_users: int = MAX_USERS
    ) -> None:
        self._runs: LocalCache[str, KnownRun] = LocalCache(
            maxsize=max_users, ttl=ttl, max_bytes=max_bytes, size=KnownRun.nbytes
        )

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def nbytes(self) -> int:
        return self._runs.nbytes

    def remember(self, user_id: str, served: KnownRun, now: float | None = None) -> None:
        """Note a run that was served to the user (costs a lookup when already known)."""
        kept = self._runs.get(user_id, now)
        if kept is not None and kept.holds(served):
            return
        self._runs.put(user_id, joined(kept, served), now)

    def remember_page(
        self,
        user_id: str,
        version: int,
        generated_at: float,
        offset: int,
        entries: list[tuple[str, float]],
        total: int,
        now: float | None = None,
    ) -> None:
        """Note a page that was served; packed only when it adds to what is known (a user
        reading the same version again costs a lookup and a few comparisons)."""
        kept = self._runs.get(user_id, now)
        if (
            kept is not None
            and kept.feed.version == version
            and kept.feed.generated_at == generated_at
            and kept.start <= offset
            and offset + len(entries) <= kept.end
        ):
            return
        packed = PackedFeed.pack(version, generated_at, entries)
        if packed is not None:
            self._runs.put(user_id, joined(kept, KnownRun(packed, offset, total)), now)

    def run(self, user_id: str, now: float | None = None) -> KnownRun | None:
        """The user's last known run, if any."""
        return self._runs.get(user_id, now)


class LastKnownPage:
    """The ``fallback=`` of one GetFeed call: that page of the user's last known feed,
    marked stale; the call's error again when nothing is known at that offset.

    One per call (a small object: the fallback is handed only the error), so it can say
    afterwards whether it answered (``served``).
    """

    __slots__ = ("feeds", "limit", "offset", "served", "user_id")

    def __init__(self, feeds: LastFeeds, user_id: str, offset: int, limit: int) -> None:
        self.feeds = feeds
        self.user_id = user_id
        self.offset = offset
        self.limit = limit
        self.served = False

    async def __call__(self, error: CellworkError) -> feed_pb2.FeedPage:
        run = self.feeds.run(self.user_id)
        entries = run.page(self.offset, self.limit) if run is not None else None
        if run is None or entries is None:
            raise error
        STALE_FEEDS.labels(error.error_code).inc()
        self.served = True
        return feed_pb2.FeedPage(
            user_id=self.user_id,
            version=run.feed.version,
            generated_at=run.feed.generated_at,
            stale=True,
            items=[feed_pb2.FeedItem(item_id=item_id, score=score) for item_id, score in entries],
            total=run.total,
        )
