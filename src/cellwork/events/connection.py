"""The connection every part of an instance shares to NATS (registry, events, control).

One client per process: JetStream (streams, consumers, the registry bucket) and core
NATS (fan-out, the control subject) ride on it. It reconnects forever in the
background once connected.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from cellwork.errors import Unavailable


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


@contextlib.asynccontextmanager
async def jetstream_session(url: str, name: str) -> AsyncIterator[JetStreamContext]:
    """A short-lived JetStream context for a command (no reconnecting): raises Unavailable
    when NATS cannot be reached, or stops answering, meanwhile."""

    async def quiet(error: Exception) -> None:  # the error raised below says it once
        pass

    try:
        # nats-py reads max_reconnect_attempts=0 as "forever": 1 is one retry.
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            allow_reconnect=False,
            error_cb=quiet,
        )
    except Exception as exc:
        raise Unavailable(f"NATS is not reachable at {url}") from exc
    try:
        yield nc.jetstream(timeout=5.0)
    except nats.errors.Error as exc:
        raise Unavailable(f"NATS at {url} did not answer: {exc!r}") from exc
    finally:
        await nc.close()
