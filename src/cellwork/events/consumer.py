"""Durable pull consumers: every instance fetching from one durable is a consumer group.

A handler gets each message's payload; when it returns, the message is acked (so
ack only follows committed work). When it raises, the message is redelivered
after a back-off; after ``max_deliver`` deliveries it goes to the dead-letter
stream (``deadletter.<stream>.<durable>``) and is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from cellwork.events.streams import DEAD_LETTER_PREFIX
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff

_log = get_logger("cellwork.events.consumer")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered event as a handler sees it."""

    subject: str
    data: bytes
    attempt: int
    msg_id: str


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer:
    """Fetches from a durable pull consumer and runs a handler per message."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        subject: str,
        handler: Handler,
        batch: int = 64,
        concurrency: int = 16,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        deliver_new: bool = False,
    ) -> None:
        self._js = js
        self.stream, self.durable, self.subject = stream, durable, subject
        self._handler = handler
        self._batch = batch
        self._concurrency = concurrency
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._deliver_new = deliver_new
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        """Bind to (or create) the durable consumer and start fetching."""
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # One more than ours so the server never gives up before we dead-letter.
            max_deliver=self._max_deliver + 1,
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if self._deliver_new else DeliverPolicy.ALL,
            max_ack_pending=10_000,
        )
        self._sub = await self._js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop fetching; finish the messages in hand (unfinished ones are redelivered)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=timeout)
        await self.close()

    async def close(self) -> None:
        """Stop at once; messages not acked are redelivered after ``ack_wait``."""
        self._stopping.set()
        for task in [*self._in_flight, *([self._task] if self._task else [])]:
            task.cancel()
        for task in [*self._in_flight, *([self._task] if self._task else [])]:
            with contextlib.suppress(BaseException):
                await task
        self._task = None
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            free = self._concurrency - len(self._in_flight)
            if free <= 0:
                # Fetch only what can start now: a fetched message waiting here would
                # run past ack_wait and be redelivered elsewhere while still held.
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await self._sub.fetch(min(self._batch, free), timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                _log.warning("events.fetch_failed", durable=self.durable, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in messages:
                task = asyncio.create_task(self._handle(msg))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            attempt = msg.metadata.num_delivered or 1
            headers = msg.headers or {}
            delivery = Delivery(msg.subject, msg.data, attempt, headers.get("Nats-Msg-Id", ""))
            try:
                await self._handler(delivery)
            except Exception as exc:
                await self._failed(msg, delivery, exc)
                return
            await msg.ack()
            self.handled += 1
        except Exception as exc:  # acking itself failed: the message is redelivered
            _log.warning("events.ack_failed", durable=self.durable, error=str(exc))

    async def _failed(self, msg: Msg, delivery: Delivery, exc: Exception) -> None:
        if delivery.attempt >= self._max_deliver:
            subject = f"{DEAD_LETTER_PREFIX}.{self.stream}.{self.durable}"
            headers = {
                "Nats-Msg-Id": f"{self.durable}:{msg.metadata.sequence.stream}",
                "Cellwork-Subject": delivery.subject,
                "Cellwork-Error": str(exc)[:200],
            }
            try:
                await self._js.publish(subject, delivery.data, headers=headers)
            except Exception as publish_error:  # keep it: one more delivery is left
                _log.error("events.dead_letter_failed", error=str(publish_error))
                await msg.nak(delay=5.0)
                return
            await msg.term()
            self.dead_lettered += 1
            _log.error(
                "events.dead_lettered",
                durable=self.durable,
                subject=delivery.subject,
                attempts=delivery.attempt,
                error=str(exc),
            )
            return
        _log.warning(
            "events.handler_failed",
            durable=self.durable,
            subject=delivery.subject,
            attempt=delivery.attempt,
            error=str(exc),
        )
        await msg.nak(delay=backoff(delivery.attempt, base=0.4, cap=10.0))
