"""The hub: per-user sockets, and one subscription to ``feed.ready.<user>`` per user
connected here (core NATS fan-out through the service's bus)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson
from prometheus_client import Counter, Gauge

from cellwork.events import Fanout, Subscription
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.v1 import events_pb2

CONNECTIONS = Gauge("learnfeed_push_connections", "Open WebSocket connections")
FRAMES = Counter("learnfeed_push_frames_total", "Frames sent to clients", ["type"])
SEND_TIMEOUT = 2.0

_log = get_logger("learnfeed.push")


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...


class Hub:
    """Routes ``feed.ready.<user>`` to that user's open sockets on this instance."""

    def __init__(self, bus: Fanout, max_per_user: int = 8, max_sockets: int = 20_000) -> None:
        self.bus = bus
        self.max_per_user = max_per_user
        self.max_sockets = max_sockets
        self.open = 0
        self.sockets: dict[str, set[Socket]] = {}
        self._subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()

    def has_room(self, user_id: str) -> bool:
        """Whether one more socket of ``user_id`` fits this instance's bounds."""
        return (
            self.open < self.max_sockets and len(self.sockets.get(user_id, ())) < self.max_per_user
        )

    async def join(self, user_id: str, socket: Socket) -> None:
        """Route the user's feed.ready to ``socket``; raises when NATS refuses the subscription."""
        async with self._lock:
            if user_id not in self.sockets:
                # Subscribe first: a failed subscription must leave nothing half-joined.
                subscription = self.bus.subscribe(contract.feed_ready(user_id), self._on_ready)
                try:
                    # The server knows of the interest before the socket counts as joined:
                    # a feed.ready published right after is not lost.
                    await subscription.confirmed()
                except BaseException:
                    await subscription.unsubscribe()
                    raise
                self._subs[user_id] = subscription
                self.sockets[user_id] = set()
            self.sockets[user_id].add(socket)
            self.open += 1
        CONNECTIONS.inc()

    async def leave(self, user_id: str, socket: Socket) -> None:
        async with self._lock:
            group = self.sockets.get(user_id)
            if group is None or socket not in group:
                return
            group.discard(socket)
            self.open -= 1
            if not group:
                del self.sockets[user_id]
                subscription = self._subs.pop(user_id, None)
                if subscription is not None:
                    await subscription.unsubscribe()
        CONNECTIONS.dec()

    @property
    def ready(self) -> bool:
        """True while connected to NATS (sockets can be told)."""
        return self.bus.connected

    async def _on_ready(self, subject: str, data: bytes) -> None:
        try:
            user_id = contract.user_of(subject, contract.FEED_READY_PREFIX)
            event = events_pb2.FeedReady.FromString(data)
        except Exception:
            _log.warning("push.bad_event", subject=subject)
            return
        frame = orjson.dumps({"type": "feed.ready", "version": event.version}).decode()
        targets = list(self.sockets.get(user_id, ()))
        results = await asyncio.gather(
            *(asyncio.wait_for(s.send_text(frame), SEND_TIMEOUT) for s in targets),
            return_exceptions=True,
        )
        FRAMES.labels("feed.ready").inc(sum(1 for r in results if r is None))
