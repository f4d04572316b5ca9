"""Publishing to JetStream with dedupe ids, awaited or batched in the background.

A service's publisher exists from the moment the service is built and is connected
to JetStream on start: events queued with ``publish_soon`` before then wait in the
queue. ``publish`` awaits the stream's acknowledgement (use it when the caller's answer
depends on the event being stored). ``publish_soon`` queues the event and returns at
once; a background task publishes what is queued without awaiting each ack in turn
(acks of a batch are gathered), which is what a hot path wants.

``publish`` fails fast: while the NATS connection is down it raises ``Unavailable`` at
once (with a ``retry_after``) rather than waiting out its timeout, and its timeout never
outlasts the deadline of the call being handled (``cellwork.rpc.context``), so a caller
answers within its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nats.js.client import JetStreamContext

from cellwork.errors import Overloaded, Unavailable
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.resilience.tasks import stop_task
from cellwork.rpc.context import current_call, effective_timeout

MSG_ID_HEADER = "Nats-Msg-Id"

# What a caller refused during a NATS outage is told to wait: the client reconnects
# every half second, and a restarted server is back within a few.
OUTAGE_RETRY_AFTER = 2.0

_log = get_logger("cellwork.events.publisher")


@dataclass(frozen=True, slots=True)
class _Pending:
    subject: str
    payload: bytes
    msg_id: str


class Publisher:
    """Publishes events; owns one background task for queued ones (start/drain/close)."""

    def __init__(
        self,
        js: JetStreamContext | None = None,
        *,
        queue_size: int = 10_000,
        batch: int = 256,
        timeout: float = 5.0,
    ) -> None:
        self._js = js
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._batch = batch
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failed = 0

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> int:
        """Publish and await the ack; returns the stream sequence.

        Raises Unavailable (with ``retry_after``) at once while NATS is disconnected,
        and when the stream does not acknowledge within the publish timeout or the
        current call's remaining deadline, whichever is shorter.
        """
        if self._js is None:
            raise Unavailable("the event stream is not connected yet: the service has not started")
        if not self.connected:
            raise Unavailable(
                "the event stream is unreachable: NATS is disconnected",
                retry_after=OUTAGE_RETRY_AFTER,
            )
        timeout = effective_timeout(self._timeout, current_call())
        if timeout is None or timeout <= 0:
            raise Unavailable("no time left to publish within the call's deadline", retry_after=1.0)
        try:
            ack = await self._js.publish(
                subject, payload, timeout=timeout, headers={MSG_ID_HEADER: msg_id}
            )
        except Exception as exc:
            raise Unavailable(
                f"event stream did not acknowledge {subject}: {exc or type(exc).__name__}",
                retry_after=OUTAGE_RETRY_AFTER,
            ) from exc
        self.published += 1
        return int(ack.seq)

    @property
    def connected(self) -> bool:
        """True while the JetStream context's connection is up."""
        if self._js is None:
            return False
        # nats-py keeps the client on the context without a public accessor.
        return bool(self._js._nc.is_connected)

    def publish_soon(self, subject: str, payload: bytes, msg_id: str) -> None:
        """Queue an event for the background task; raises Overloaded when the queue is full.

        The queue fills only when the stream stops acknowledging; it frees no faster than
        one publish timeout, which is the retry-after the error carries.
        """
        try:
            self._queue.put_nowait(_Pending(subject, payload, msg_id))
        except asyncio.QueueFull:
            raise Overloaded("event queue is full", retry_after=self._timeout) from None

    def start(self, js: JetStreamContext | None = None) -> None:
        """Start publishing what is queued, through ``js`` when given."""
        if js is not None:
            self._js = js
        if self._js is None:
            raise ValueError("a publisher needs a JetStream context to start")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cellwork-publisher")

    async def drain(self, timeout: float = 5.0) -> None:
        """Publish what is queued (up to ``timeout`` s; not at all while NATS is away:
        what is queued is best effort, and waiting would only eat the drain), then stop."""
        if self.connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
        if not self._queue.empty():
            _log.warning("events.publish_dropped_on_drain", count=self._queue.qsize())
        await self.close()

    async def close(self) -> None:
        """Stop the background task at once."""
        if self._task is not None:
            task, self._task = self._task, None
            await stop_task(task)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            results = await asyncio.gather(
                *(self._publish_with_retry(p) for p in batch), return_exceptions=True
            )
            for _ in batch:
                self._queue.task_done()
            for pending, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.failed += 1
                    _log.error("events.publish_failed", subject=pending.subject, error=str(result))

    async def _publish_with_retry(self, pending: _Pending, attempts: int = 3) -> None:
        # The dedupe id makes a retried publish safe: the stream stores it once. While
        # NATS is disconnected the event waits (the queue's bound holds the rest back);
        # only refusals from a connected server count as attempts.
        failures = 0
        while True:
            try:
                await self.publish(pending.subject, pending.payload, pending.msg_id)
                return
            except Unavailable:
                if self.connected:
                    failures += 1
                    if failures >= attempts:
                        raise
                await asyncio.sleep(backoff(failures + 1, base=0.1, cap=1.0))
