"""The gateway's view of feeds: current versions kept at the caller, dropped on change.

A feed version changes when the recommender stores a new one (at most about once
per refresh window per user) and is read far more often, so each gateway instance
keeps the versions it has read. The feed instance that stores a version announces
it on ``_learnfeed.feed.changed.<user>`` before ``feed.ready`` goes out, and every
gateway drops its copy on that message: a client told "ready" reads the new one.

Reads served from the copy still ask for a refresh once per user per window, as a
read that reaches the feed service does (``RequestRefresh``, coalesced there too).
Cold-start feeds (version 0) are never kept: their reads go to the feed service.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.msg import Msg

from cellwork import Client
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.freshness import CurrentVersions, RefreshCoalescer, is_stale, parse_changed
from learnfeed.v1 import feed_pb2, feed_pb2_grpc

WHOLE = 100  # GetFeed's largest page: versions up to this size are kept whole
MAX_ASKING = 1000  # refresh requests in flight at once; more wait for the next window

_log = get_logger("learnfeed.gateway")


@dataclass(frozen=True, slots=True)
class FeedSlice:
    """A page of a user's feed: ranked (item id, score) pairs and what version they are."""

    version: int
    generated_at: float
    stale: bool
    entries: list[tuple[str, float]]
    total: int


class FeedReader:
    """Reads feeds through the feed service, keeping current versions when ``keep``."""

    def __init__(self, refresh_window: float, keep: bool, ttl: float = 30.0) -> None:
        self.window = refresh_window
        self.keep = keep
        self.feed: Client[feed_pb2_grpc.FeedStub] | None = None
        self.versions: CurrentVersions[FeedSlice] = CurrentVersions(ttl=ttl)
        self.coalescer = RefreshCoalescer(refresh_window)
        self._asking: set[asyncio.Task[None]] = set()

    async def on_changed(self, msg: Msg) -> None:
        """A feed instance stored a new version: older copies stop being served."""
        user_id = contract.user_of(msg.subject, contract.FEED_CHANGED_PREFIX)
        self.versions.announce(user_id, parse_changed(msg.data)[1])

    async def page(self, user_id: str, offset: int, limit: int) -> FeedSlice:
        now = time.time()
        kept = self.versions.get(user_id) if self.keep else None
        if kept is not None:
            if self.coalescer.should_request(user_id, now) is not None:
                self._ask_refresh(user_id)
            return FeedSlice(
                kept.version,
                kept.generated_at,
                is_stale(kept.generated_at, now, self.window, cold=False),
                kept.entries[offset : offset + limit],
                kept.total,
            )
        assert self.feed is not None
        whole = self.keep and offset + limit <= WHOLE
        reply = await self.feed.call(
            "GetFeed",
            feed_pb2.GetFeedRequest(
                user_id=user_id, offset=0 if whole else offset, limit=WHOLE if whole else limit
            ),
            idempotent=True,
        )
        # The feed service asked for a refresh for this read; this window is covered.
        self.coalescer.should_request(user_id, now)
        entries = [(e.item_id, e.score) for e in reply.items]
        # Kept unless a newer version was announced while this read was in flight.
        if whole and reply.version > 0 and reply.total <= len(entries):
            self.versions.keep(
                user_id, FeedSlice(reply.version, reply.generated_at, False, entries, reply.total)
            )
        if whole:
            entries = entries[offset : offset + limit]
        return FeedSlice(reply.version, reply.generated_at, reply.stale, entries, reply.total)

    def _ask_refresh(self, user_id: str) -> None:
        if len(self._asking) >= MAX_ASKING or self.feed is None:
            return
        task = asyncio.create_task(self._request_refresh(self.feed, user_id))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _request_refresh(self, feed: Client[feed_pb2_grpc.FeedStub], user_id: str) -> None:
        try:
            await feed.call(
                "RequestRefresh",
                feed_pb2.RequestRefreshRequest(user_id=user_id, reason="read"),
                timeout=2.0,
                idempotent=True,
            )
        except Exception as exc:  # the next window asks again
            _log.warning("gateway.refresh_request_failed", error=str(exc))

    async def close(self) -> None:
        """Wait briefly for refresh requests in flight, then cancel what is left."""
        if self._asking:
            await asyncio.wait(self._asking, timeout=2.0)
        for task in list(self._asking):
            task.cancel()
        await asyncio.gather(*self._asking, return_exceptions=True)
