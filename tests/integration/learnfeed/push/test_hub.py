"""The push hub on a real nats-server: feed.ready reaches exactly the user's sockets,
subscriptions follow the sockets, and the socket bounds hold."""

from __future__ import annotations

import json

from cellwork.events import Fanout, connect_nats
from learnfeed import contract
from learnfeed.push.hub import Hub
from learnfeed.v1 import events_pb2
from tests.waiting import wait_until


class Socket:
    """Stands in for a client's WebSocket: records what it is sent."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    async def send_text(self, data: str) -> None:
        self.frames.append(json.loads(data))


async def test_feed_ready_reaches_the_users_sockets_only(nats_server) -> None:
    nc = await connect_nats(nats_server.url, "test-hub")
    publisher = await connect_nats(nats_server.url, "test-hub-pub")
    bus = Fanout()
    await bus.attach(nc)
    hub = Hub(bus, max_per_user=2, max_sockets=3)
    try:
        a1, a2, b1 = Socket(), Socket(), Socket()
        await hub.join("alice", a1)
        await hub.join("alice", a2)
        await hub.join("bob", b1)
        assert not hub.has_room("alice")  # two per user
        assert not hub.has_room("carol")  # three in all
        ready = events_pb2.FeedReady(user_id="alice", version=7).SerializeToString()
        await publisher.publish(contract.feed_ready("alice"), ready)
        await publisher.flush()
        await wait_until(lambda: a1.frames and a2.frames, "both of alice's sockets to hear")
        assert a1.frames == a2.frames == [{"type": "feed.ready", "version": 7}]
        assert b1.frames == []

        await hub.leave("alice", a1)
        await hub.leave("alice", a2)
        assert "alice" not in hub.sockets and hub.has_room("alice")
        await publisher.publish(contract.feed_ready("alice"), ready)
        to_bob = events_pb2.FeedReady(user_id="bob", version=8).SerializeToString()
        await publisher.publish(contract.feed_ready("bob"), to_bob)
        await publisher.flush()
        # Bob's frame was published after alice's, on the same connection: once it has
        # arrived, alice's would have too, had her sockets still been subscribed.
        await wait_until(lambda: b1.frames, "bob's socket to hear")
        assert len(a1.frames) == 1  # unsubscribed with the last socket
        await hub.leave("alice", a1)  # leaving twice changes nothing
        assert hub.open == 1
    finally:
        await bus.close()
        await nc.close()
        await publisher.close()
