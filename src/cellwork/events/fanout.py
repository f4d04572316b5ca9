"""Fan-out over core NATS: tell every instance listening now; nothing is stored or acked.

For messages that must reach every interested instance at once and are worthless
later — a cache invalidation between siblings, a notification for a user's open
sockets. What must not be lost goes to a stream instead (``Publisher``).

A ``Fanout`` exists from the moment a service is built; it is attached to the
service's NATS connection on start. Subscriptions declared before start are made
(and confirmed) on attach; a subscription made later is made at once. Either way the handle's
``confirmed()`` returns once the server knows of the interest, so a message
published after it is delivered (push counts a socket as joined only then).
Core NATS loses what is published while a subscriber is disconnected: a service
that keeps state derived from these messages resets it in an ``on_reconnect`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from cellwork.errors import Unavailable
from cellwork.observability.logging import get_logger

MessageHandler = Callable[[str, bytes], Awaitable[None]]
"""``await handler(subject, data)`` for each message; what it raises is logged."""

_log = get_logger("cellwork.events.fanout")


class Subscription:
    """One interest in a subject (wildcards allowed): ``confirmed()``, ``unsubscribe()``."""

    def __init__(self, fanout: Fanout, subject: str, handler: MessageHandler) -> None:
        self.subject = subject
        self._fanout = fanout
        self._handler = handler
        self._made: asyncio.Task[NatsSubscription] | None = None
        self._closed = False

    def _make(self, nc: NatsClient) -> None:
        self._made = asyncio.get_running_loop().create_task(
            nc.subscribe(self.subject, cb=self._deliver), name=f"subscribe:{self.subject}"
        )

    async def _deliver(self, msg: Msg) -> None:
        try:
            await self._handler(msg.subject, msg.data)
        except Exception:
            _log.exception("events.fanout_handler_failed", subject=msg.subject)

    async def confirmed(self, timeout: float = 2.0) -> None:
        """Return once the server has the interest; raises Unavailable when it cannot."""
        if self._closed:
            raise Unavailable(f"the subscription to {self.subject} is closed")
        nc = self._fanout._nc
        if self._made is None or nc is None:
            raise Unavailable("not connected to NATS yet: the service has not started")
        try:
            await asyncio.wait_for(asyncio.shield(self._made), timeout)
            await nc.flush(timeout=math.ceil(timeout))
        except Exception as exc:
            raise Unavailable(f"NATS did not confirm the subscription to {self.subject}") from exc

    async def unsubscribe(self) -> None:
        """Stop receiving (idempotent; never raises)."""
        if self._closed:
            return
        self._closed = True
        self._fanout._forget(self)
        made, self._made = self._made, None
        if made is None:
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            sub = await made
            await sub.unsubscribe()


class Fanout:
    """Core-NATS broadcast and subscriptions of one service instance."""

    def __init__(self) -> None:
        self._nc: NatsClient | None = None
        self._subscriptions: list[Subscription] = []

    @property
    def connected(self) -> bool:
        """True while attached to a connected NATS client."""
        return self._nc is not None and self._nc.is_connected

    async def attach(self, nc: NatsClient, timeout: float = 5.0) -> None:
        """Use ``nc`` from now on; make every subscription declared before and wait until
        the server has them (a service turns SERVING only after this)."""
        self._nc = nc
        declared = list(self._subscriptions)
        for subscription in declared:
            subscription._make(nc)
        for subscription in declared:
            await subscription.confirmed(timeout)

    def subscribe(self, subject: str, handler: MessageHandler) -> Subscription:
        """Receive ``subject``'s messages in ``handler``; made now, or on attach."""
        subscription = Subscription(self, subject, handler)
        self._subscriptions.append(subscription)
        if self._nc is not None:
            subscription._make(self._nc)
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    async def broadcast(self, subject: str, data: bytes, *, confirm: bool = False) -> None:
        """Publish to whoever listens now. ``confirm`` waits until the server has it
        (a flush), so a later message on another connection cannot overtake it.
        Raises Unavailable when not connected or the server does not answer."""
        nc = self._nc
        if nc is None:
            raise Unavailable("not connected to NATS yet: the service has not started")
        try:
            await nc.publish(subject, data)
            if confirm:
                await nc.flush(timeout=2)
        except Exception as exc:
            raise Unavailable(f"could not broadcast on {subject}: {exc}") from exc

    async def close(self) -> None:
        """Drop every subscription (the connection itself belongs to the service)."""
        for subscription in list(self._subscriptions):
            await subscription.unsubscribe()
        self._nc = None
