"""What the recommender consumes (refresh requests, interactions) and publishes (the
periodic pass's refresh requests).

Every instance fetches from the same durable consumers, so the instances form one
consumer group: each refresh request is ranked by one of them. A refresh is acked
only after feed stored the new version; feed announces it (``feed.ready``) from its
outbox, in the transaction that stores it. A refresh delivered again (its ack was
lost, the worker died after PutFeed) stores nothing new: PutFeed carries the refresh
event's id and feed applies each id once.

Both consumers are safe to run twice on one event (a redelivery, a replayed dead
letter): an interaction is recorded once per event id; a refresh applied once per
refresh id. An event that cannot decode or names no user is poison: dead-lettered at
once, never retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from cellwork import NotFound
from cellwork.events import Delivery, Poison, Publisher
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.recommender.domain import KIND_WEIGHT
from learnfeed.recommender.ranker import Ranker
from learnfeed.recommender.store import RecommenderStore
from learnfeed.v1 import events_pb2, feed_pb2, identity_pb2
from learnfeed.v1.feed_client import FeedClient
from learnfeed.v1.identity_client import IdentityClient

INDEX_WAIT = 10.0  # seconds a refresh waits for the catalog index before it is retried

_log = get_logger("learnfeed.recommender")


class RefreshRanker:
    """Consumer of ``feed.refresh.requested``: rank, then store through feed (once per
    refresh event, however often it is delivered)."""

    def __init__(
        self,
        ranker: Ranker,
        identity: IdentityClient,
        feed: FeedClient,
        store: RecommenderStore,
    ) -> None:
        self.ranker = ranker
        self.identity = identity
        self.feed = feed
        self.store = store

    async def __call__(self, delivery: Delivery) -> None:
        event = events_pb2.FeedRefreshRequested.FromString(delivery.data)
        if not event.user_id:
            raise Poison("a refresh request without user_id")
        await asyncio.wait_for(self.ranker.ready.wait(), timeout=INDEX_WAIT)
        try:
            follows = await self.identity.list_follows(
                identity_pb2.ListFollowsRequest(user_id=event.user_id), timeout=2.0
            )
            followed = list(follows.educator_ids)
        except NotFound:
            followed = []
        items = await self.ranker.rank_user(followed, event.user_id)
        await self.feed.put_feed(
            feed_pb2.PutFeedRequest(
                user_id=event.user_id,
                items=[feed_pb2.FeedItem(item_id=i, score=s) for i, s in items],
                generated_at=time.time(),
                refresh_id=refresh_id_of(delivery),
                requested_at=event.requested_at,
            ),
            timeout=2.0,
        )
        await self.store.mark_ranked(event.user_id)


def refresh_id_of(delivery: Delivery) -> str:
    """The refresh's id for PutFeed: its ``Nats-Msg-Id``, or, for an event published
    without one, a digest of its bytes (a redelivery carries the same bytes)."""
    if delivery.msg_id:
        return delivery.msg_id
    return "sha256." + hashlib.sha256(delivery.data).hexdigest()[:32]


class InteractionRecorder:
    """Consumer of ``interaction.*``: affinities and popularity, once per event id."""

    def __init__(self, store: RecommenderStore) -> None:
        self.store = store

    async def __call__(self, delivery: Delivery) -> None:
        event = events_pb2.Interaction.FromString(delivery.data)
        if not (event.user_id and event.item_id):
            raise Poison("an interaction without user_id or item_id")
        if event.kind not in KIND_WEIGHT:
            raise Poison(f"an interaction of unknown kind {event.kind!r}")
        event_id = delivery.msg_id or f"{event.user_id}:{event.item_id}:{event.kind}:{event.at}"
        await self.store.record_interaction(
            event_id,
            event.user_id,
            event.item_id,
            event.kind,
            event.at,
            KIND_WEIGHT[event.kind],
        )


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
