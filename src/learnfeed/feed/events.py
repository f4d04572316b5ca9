"""What feed announces when it stores a version, from its outbox, in the same transaction.

For each stored version, in this order:

1. ``_learnfeed.feed.changed.<user>`` (core NATS, a broadcast): every feed instance and
   gateway drops its copy of the older version;
2. ``feed.ready.<user>`` (the FEED stream, dedupe id ``ready.<user>.<version>``): push
   tells the user's sockets.

The outbox relays rows in order and flushes a broadcast before the next row, so every
copy of the old version is gone before ``feed.ready`` goes out. A feed instance that
dies after the commit loses neither: its restart (or a sibling, after the orphan age)
relays them, and the stream stores ``feed.ready`` once.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncConnection

from cellwork.events import Outbox
from learnfeed import contract
from learnfeed.feed.store import Announce
from learnfeed.freshness import changed_payload
from learnfeed.v1 import events_pb2

# How long PutFeed waits for its announcements to go out before it answers anyway (the
# version is stored; the relay sends them later). Well inside a caller's 2 s timeout.
ANNOUNCE_WAIT = 1.0


def ready_id(user_id: str, version: int) -> str:
    """The dedupe id of ``feed.ready`` for one version."""
    return f"ready.{user_id}.{version}"


class Announcements:
    """Writes a stored version's announcements into the outbox, and waits for them."""

    def __init__(self, outbox: Outbox, instance_id: str) -> None:
        self.outbox = outbox
        self.instance_id = instance_id

    def of(self, user_id: str, generated_at: float, requested_at: float) -> Announce:
        """The ``announce`` step of ``FeedStore.put_version`` for one user's version."""

        async def announce(conn: AsyncConnection, version: int) -> list[int]:
            ready = events_pb2.FeedReady(
                user_id=user_id,
                version=version,
                generated_at=generated_at or time.time(),
                requested_at=requested_at,
            )
            return [
                await self.outbox.add_broadcast(
                    conn,
                    contract.feed_changed(user_id),
                    changed_payload(self.instance_id, version),
                ),
                await self.outbox.add(
                    conn,
                    contract.feed_ready(user_id),
                    ready.SerializeToString(),
                    msg_id=ready_id(user_id, version),
                ),
            ]

        return announce

    async def sent(self, rows: list[int], time_left: float | None) -> bool:
        """Wait (bounded by ``ANNOUNCE_WAIT`` and most of ``time_left``) for ``rows`` to
        go out; False when they did not (yet): NATS is down, or the relay is slow."""
        wait = ANNOUNCE_WAIT if time_left is None else min(ANNOUNCE_WAIT, 0.8 * time_left)
        return await self.outbox.sent(rows, timeout=wait)
