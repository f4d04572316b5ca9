"""The gateway's view of feeds: current versions kept at the caller, dropped on change.

A feed version changes when the recommender stores a new one (at most about once
per refresh window per user) and is read far more often, so each gateway instance
keeps the versions it has read. The feed instance that stores a version announces
it on ``_learnfeed.feed.changed.<user>`` before ``feed.ready`` goes out, and every
gateway drops its copy on that message: a client told "ready" reads the new one.

Reads served from the copy still ask for a refresh once per user per window, as a
read that reaches the feed service does (``RequestRefresh``, coalesced there too).
Cold-start feeds (version 0) are never kept: their reads go to the feed service.
Kept versions are packed (``PackedFeed``, ~1.9 KB for 100 entries) and bounded by
bytes (``CELLWORK_GATEWAY_FEED_CACHE_BYTES``) as well as by count.

Whatever that switch says, the pages each user was served are remembered apart
(``LastFeeds``) and answered again, marked stale, when feed cannot answer; and a page
whose items the catalog cannot describe in time goes out with those items bare.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.freshness import (
    CurrentVersions,
    PackedFeed,
    RefreshCoalescer,
    is_stale,
    parse_changed,
)
from learnfeed.gateway.cursors import decode_cursor, encode_cursor
from learnfeed.gateway.items import Items
from learnfeed.gateway.last_feeds import KnownRun, LastFeeds, LastKnownPage
from learnfeed.gateway.render import JSON, bare_item_json, scored
from learnfeed.v1 import feed_pb2
from learnfeed.v1.feed_client import FeedClient

WHOLE = contract.FEED_PAGE_MAX  # versions up to GetFeed's largest page are kept whole
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


@dataclass(frozen=True, slots=True)
class FeedAnswer:
    """An enriched page of a user's feed: its JSON body, its entity tag, and whether the
    catalog described every item (False: some items are bare)."""

    body: dict[str, Any]
    etag: str
    enriched: bool


class FeedReader:
    """Reads feeds through the feed service, keeping current versions when ``keep``, and
    the pages each user was served in ``last`` (answered, stale, when feed cannot)."""

    def __init__(
        self,
        feed: FeedClient,
        refresh_window: float,
        keep: bool,
        last: LastFeeds,
        ttl: float = 30.0,
        max_bytes: int = 128 * 2**20,
    ) -> None:
        self.feed = feed
        self.last = last
        self.window = refresh_window
        self.keep = keep
        self.versions: CurrentVersions[PackedFeed] = CurrentVersions(
            ttl=ttl, max_bytes=max_bytes, size=PackedFeed.nbytes
        )
        self.coalescer = RefreshCoalescer(refresh_window)
        self._asking: set[asyncio.Task[None]] = set()

    async def on_changed(self, subject: str, data: bytes) -> None:
        """A feed instance stored a new version: older copies stop being served."""
        user_id = contract.user_of(subject, contract.FEED_CHANGED_PREFIX)
        self.versions.announce(user_id, parse_changed(data)[1])

    async def forget_versions(self) -> None:
        """After a NATS reconnect announcements may have been missed: drop every copy."""
        self.versions.clear()

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
                kept.page(offset, limit),
                kept.total,
            )
        whole = self.keep and offset + limit <= WHOLE
        start = 0 if whole else offset
        last_known = LastKnownPage(self.last, user_id, offset, limit)
        reply = await self.feed.get_feed(
            feed_pb2.GetFeedRequest(user_id=user_id, offset=start, limit=WHOLE if whole else limit),
            fallback=last_known,
        )
        entries = [(e.item_id, e.score) for e in reply.items]
        if last_known.served:  # feed could not answer: nothing new to keep
            return FeedSlice(reply.version, reply.generated_at, True, entries, reply.total)
        # The feed service asked for a refresh for this read; this window is covered.
        self.coalescer.should_request(user_id, now)
        packed = None
        # Kept unless a newer version was announced while this read was in flight.
        if whole and reply.version > 0 and reply.total <= len(entries):
            packed = PackedFeed.pack(reply.version, reply.generated_at, entries)
            if packed is not None:
                self.versions.keep(user_id, packed)
        if packed is not None:  # the same object: remembered at no cost in bytes here
            self.last.remember(user_id, KnownRun(packed, 0, reply.total))
        else:
            self.last.remember_page(
                user_id, reply.version, reply.generated_at, start, entries, reply.total
            )
        if whole:
            entries = entries[offset : offset + limit]
        return FeedSlice(reply.version, reply.generated_at, reply.stale, entries, reply.total)

    def _ask_refresh(self, user_id: str) -> None:
        if len(self._asking) >= MAX_ASKING:
            return
        task = asyncio.create_task(self._request_refresh(user_id))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _request_refresh(self, user_id: str) -> None:
        try:
            await self.feed.request_refresh(
                feed_pb2.RequestRefreshRequest(user_id=user_id, reason="read"), timeout=2.0
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


class FeedPages:
    """Enriched pages of a user's feed: the reader's entries with the items rendered."""

    def __init__(self, reader: FeedReader, items: Items) -> None:
        self.reader = reader
        self.items = items

    async def page(self, user_id: str, offset: int, limit: int) -> FeedAnswer:
        """One enriched page of the user's feed, with its entity tag.

        Items the catalog could not describe in time are bare (``enriched`` False).
        Raises feed's error when feed cannot answer and nothing was served before.
        """
        page = await self.reader.page(user_id, offset, limit)
        found, enriched = await self.items.rendered([item_id for item_id, _ in page.entries])
        if enriched:
            # An item gone from the catalog since the feed was ranked is left out.
            kept = [(item_id, score) for item_id, score in page.entries if item_id in found]
            rendered = [scored(found[item_id], score) for item_id, score in kept]
            bare = ""
        else:
            # Unknown is not gone: every entry stays, described or not.
            kept = page.entries
            rendered = [
                scored(found.get(item_id) or bare_item_json(item_id), score)
                for item_id, score in kept
            ]
            # A page with bare items is another answer than the full one: another tag.
            bare = "|bare:" + ",".join(item_id for item_id, _ in kept if item_id not in found)
        ids = ",".join(item_id for item_id, _ in kept)
        tag = hashlib.blake2b(
            f"{user_id}|{page.version}|{offset}|{limit}|{ids}{bare}".encode(), digest_size=8
        ).hexdigest()
        end = offset + len(page.entries)
        body = {
            "user_id": user_id,
            "version": page.version,
            "generated_at": page.generated_at,
            "stale": page.stale,
            "items": rendered,
            "next_cursor": encode_cursor(page.version, end) if end < page.total else None,
        }
        return FeedAnswer(body, f'"{tag}"', enriched)

    async def response(
        self, request: Request, user: str, limit: int, cursor: str | None
    ) -> Response:
        """The answer to GET /v1/feed: a page with its ETag, or 304 when it matches."""
        offset = decode_cursor(cursor) if cursor else 0
        answer = await self.page(user, offset, limit)
        headers = {"ETag": answer.etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == answer.etag:
            return Response(status_code=304, headers=headers)
        return Response(orjson.dumps(answer.body), headers=headers, media_type=JSON)
