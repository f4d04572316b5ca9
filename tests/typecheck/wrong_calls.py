"""Calls that must not type-check: ``make typecheck`` runs mypy --strict on this file.

Each wrong call carries the ignore that mypy needs for it; strict mode's
``warn_unused_ignores`` fails the run the day one of them stops being an error,
so this file proves that a wrong request type is caught at a call site.
"""

from __future__ import annotations

from learnfeed.v1 import catalog_pb2, feed_pb2
from learnfeed.v1.feed_client import FeedClient


async def wrong_request_type(feed: FeedClient) -> None:
    await feed.get_feed(catalog_pb2.GetItemsRequest(ids=["i1"]))  # type: ignore[arg-type]


async def wrong_response_use(feed: FeedClient) -> None:
    page = await feed.get_feed(feed_pb2.GetFeedRequest(user_id="u1"))
    page.no_such_field  # type: ignore[attr-defined]  # noqa: B018


async def misspelt_method(feed: FeedClient) -> None:
    await feed.getfeed(feed_pb2.GetFeedRequest(user_id="u1"))  # type: ignore[attr-defined]
