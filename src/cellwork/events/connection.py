"""The connection every part of an instance shares to NATS (registry, events, control).

One client per process: JetStream (streams, consumers, the registry bucket) and core
NATS (fan-out, the control subject) ride on it. It reconnects forever in the
background once connected. ``wait_for_nats`` makes the first connection patiently,
for an instance that starts while NATS is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from cellwork.errors import Unavailable
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff

_log = get_logger("cellwork.events.connection")


async def _log_error(exc: Exception) -> None:
    # nats-py's default logs a traceback for every failed (re)connect attempt.
    _log.warning("nats.error", error=str(exc) or type(exc).__name__)


async def connect_nats(
    url: str,
    name: str,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    *,
    first_attempts: int | None = None,
) -> NatsClient:
    """Connect to NATS, reconnecting forever in the background once connected.

    ``on_reconnected`` runs after each reconnection (core NATS messages sent while
    disconnected are lost: a subscriber that keeps derived state may need to reset it).
    ``first_attempts`` bounds the tries of the first connection (nats-py tries each
    server that many times plus one, half a second apart, then raises
    ``NoServersError``); without it the first connection is tried forever.
    """
    options: dict[str, Any] = {}
    if on_reconnected is not None:
        options["reconnected_cb"] = on_reconnected
    nc = await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=first_attempts if first_attempts is not None else -1,
        allow_reconnect=True,
        error_cb=_log_error,
        **options,
    )
    # nats-py reads the bound at each reconnection: from now on, never give up.
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def wait_for_nats(
    url: str,
    name: str,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    *,
    base: float = 0.25,
    cap: float = 5.0,
) -> NatsClient:
    """Connect to NATS, waiting while it is down: each failed attempt is logged
    (``nats.connect_failed``) and tried again after a back-off (``base`` doubling up
    to ``cap`` seconds, jittered). Returns once connected; cancel it to give up."""
    attempt = 0
    while True:
        try:
            return await connect_nats(url, name, on_reconnected, first_attempts=1)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            attempt += 1
            delay = backoff(attempt, base=base, cap=cap)
            _log.warning(
                "nats.connect_failed",
                url=url,
                attempt=attempt,
                retry_in=round(delay, 3),
                error=str(exc) or type(exc).__name__,
            )
            await asyncio.sleep(delay)


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
