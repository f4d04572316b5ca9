"""The connection every part of an instance shares to NATS (registry, events, control).

One client per process: JetStream (streams, consumers, the registry bucket) and core
NATS (fan-out, the control subject) ride on it. It reconnects forever in the
background once connected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient


async def connect_nats(
    url: str, name: str, on_reconnected: Callable[[], Awaitable[None]] | None = None
) -> NatsClient:
    """Connect to NATS, reconnecting forever in the background once connected.

    ``on_reconnected`` runs after each reconnection (core NATS messages sent while
    disconnected are lost: a subscriber that keeps derived state may need to reset it).
    """
    options: dict[str, Any] = {}
    if on_reconnected is not None:
        options["reconnected_cb"] = on_reconnected
    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        **options,
    )
