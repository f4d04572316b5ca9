"""Durable pull consumers: every instance fetching from one durable is a consumer group.

The life of a message, step by step:

1. The consumer fetches only as many messages as it can start now, so none waits in a
   local queue while its ack deadline runs. How many it runs at once adapts
   (``cellwork.resilience.adaptive``, as a server's methods do): up to ``concurrency``
   while handlers keep their usual latency, fewer (down to one) when they slow down
   together, so a struggling dependency is not met with ever more work at once.
2. The handler runs under ``handler_timeout``. Meanwhile the consumer tells the
   server every ``ack_wait / 3`` that the work is in progress, so a slow handler is
   not delivered to a second instance while it still runs; ``ack_wait`` then only
   bounds how long a crashed instance's messages wait before another takes them.
3. The handler returns: the message is acked (so an ack always follows committed work).
4. The handler raises: ``failures.py`` tells poison from a blip. Poison (the content
   is wrong) is dead-lettered at once; a transient failure is nak'ed with back-off
   and jitter, again and again, until the message is ``retry_max_age`` old; then it
   is dead-lettered as ``transient_exhausted``. The server itself never gives up
   (``max_deliver`` is unlimited): only this code decides a message is dead.
5. Dead-lettering publishes the payload with its story (``deadletters.py``) to the
   dead-letter stream, then terminates the original. When the dead-letter stream
   cannot take it, the message is nak'ed and kept: nothing is lost to an outage.

When NATS goes away a fetch just times out, so the loop waits quietly. When it comes
back without its store (the durable or its stream are gone), fetching fails: the
consumer logs it once and re-creates its durable, retrying with back-off until the
stream is there again (the service re-creates streams on reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError
from prometheus_client import Gauge

from cellwork.events.deadletters import (
    REPLAY_OF_HEADER,
    dead_letter_headers,
    dead_letter_subject,
)
from cellwork.events.failures import GiveUp, RetryPolicy, classify
from cellwork.events.publisher import MSG_ID_HEADER
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import event_metrics
from cellwork.resilience.adaptive import ConcurrencyLimiter, LimitSettings
from cellwork.resilience.backoff import backoff
from cellwork.resilience.tasks import stop_task

_log = get_logger("cellwork.events.consumer")

# How long one fetch waits for messages: also how soon a drain is noticed.
FETCH_WAIT = 0.5
# How long a dead letter's publish may take before the message is kept for later.
DEAD_LETTER_TIMEOUT = 5.0

EVENTS_CONCURRENCY_LIMIT = "cellwork_events_concurrency_limit"
EVENTS_IN_FLIGHT = "cellwork_events_in_flight"

_gauges_lock = threading.Lock()
_gauges: tuple[Gauge, Gauge] | None = None


def concurrency_gauges() -> tuple[Gauge, Gauge]:
    """Return (limit, in flight) of the process's consumers, by stream and durable; both
    read their consumer at scrape time."""
    global _gauges
    with _gauges_lock:
        if _gauges is None:
            _gauges = (
                Gauge(
                    EVENTS_CONCURRENCY_LIMIT,
                    "Handlers a consumer runs at once at most now (adaptive, up to its "
                    "concurrency).",
                    ["stream", "durable"],
                ),
                Gauge(
                    EVENTS_IN_FLIGHT,
                    "Messages a consumer is handling now.",
                    ["stream", "durable"],
                ),
            )
        return _gauges


def consumer_limits(concurrency: int) -> LimitSettings:
    """A consumer's adaptive limit: from ``concurrency`` handlers at once, its upper bound,
    down to one."""
    return LimitSettings(initial=concurrency, min_limit=1, max_limit=concurrency)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered event as a handler sees it.

    ``msg_id`` is the event's id (its ``Nats-Msg-Id``; a replayed dead letter keeps
    the original's), which a handler uses to do its work once per event.
    """

    subject: str
    data: bytes
    attempt: int
    msg_id: str


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer:
    """Fetches from a durable pull consumer and runs a handler per message.

    Options: ``concurrency``, the most handlers run at once (the limit adapts below it);
    ``ack_wait`` (s) before the server redelivers a message whose holder went
    silent (15 s: with a heartbeat every 5 s, two may be lost before it counts);
    ``handler_timeout`` (s) before a run counts as a transient failure;
    ``retry_max_age`` (s since the message was stored) until a transiently failing
    message is dead-lettered; ``retry_base`` / ``retry_cap`` (s) shape the back-off
    between its deliveries. Raises ValueError for a non-positive one.
    """

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
        ack_wait: float = 15.0,
        handler_timeout: float = 30.0,
        retry_max_age: float = 300.0,
        retry_base: float = 0.5,
        retry_cap: float = 15.0,
        deliver_new: bool = False,
    ) -> None:
        if batch < 1 or concurrency < 1:
            raise ValueError("a consumer needs batch >= 1 and concurrency >= 1")
        if ack_wait <= 0 or handler_timeout <= 0:
            raise ValueError("ack_wait and handler_timeout must be > 0 seconds")
        self._js = js
        self.stream, self.durable, self.subject = stream, durable, subject
        self._handler = handler
        self._batch = batch
        self._limiter = ConcurrencyLimiter(consumer_limits(concurrency), time.monotonic())
        self._ack_wait = ack_wait
        self._handler_timeout = handler_timeout
        self._policy = RetryPolicy(max_age=retry_max_age, base=retry_base, cap=retry_cap)
        self._deliver_new = deliver_new
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        metrics = event_metrics()
        self._handled_total = metrics.handled.labels(stream, durable)
        self._failed_total = metrics.failed
        self._dead_lettered_total = metrics.dead_lettered
        self._duration = metrics.duration.labels(stream, durable)
        limit_gauge, in_flight_gauge = concurrency_gauges()
        limiter = self._limiter
        limit_gauge.labels(stream, durable).set_function(lambda: limiter.limit)
        in_flight_gauge.labels(stream, durable).set_function(lambda: limiter.in_flight)
        self.handled = 0
        self.retried = 0
        self.dead_lettered = 0
        self.recreated = 0

    @property
    def concurrency_limit(self) -> int:
        """Handlers this consumer runs at once at most now (adaptive, up to ``concurrency``)."""
        return self._limiter.limit

    @property
    def in_flight(self) -> int:
        """Messages being handled now."""
        return self._limiter.in_flight

    def config(self) -> ConsumerConfig:
        """The durable's configuration, as created (and re-created) on the server."""
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=-1,  # the server never gives up: failures.py decides
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if self._deliver_new else DeliverPolicy.ALL,
            max_ack_pending=10_000,
        )

    async def start(self) -> None:
        """Create the durable (or bring an existing one in line) and start fetching."""
        config = self.config()
        try:
            await self._js.add_consumer(self.stream, config)
        except APIError as exc:
            # A setting the server cannot change in place (the deliver policy): the
            # durable keeps its old one, and works as it did.
            _log.warning("events.consumer_config_kept", durable=self.durable, error=repr(exc))
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
        """Stop at once; the messages in hand are handed back for redelivery."""
        self._stopping.set()
        # Fetching stops first: a message handed back below must not come to this
        # instance's inbox again, where nobody reads it until ack_wait runs out.
        if self._task is not None:
            task, self._task = self._task, None
            await stop_task(task)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        for handling in list(self._in_flight):
            await stop_task(handling)

    # -- fetching -----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            free = self._limiter.limit - self._limiter.in_flight
            if free <= 0:
                # Fetch only what can start now: a fetched message waiting here would
                # run past ack_wait and be redelivered elsewhere while still held.
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not self._connected():
                # A pull request sent now would wait in nats-py's reconnect buffer and be
                # flushed, with every other one, when the connection is back.
                await self._pause(FETCH_WAIT)
                continue
            try:
                messages = await self._sub.fetch(min(self._batch, free), timeout=FETCH_WAIT)
            except (TimeoutError, nats.errors.TimeoutError):
                continue  # nothing to do; also what a fetch does while NATS is away
            except Exception as exc:
                if self._stopping.is_set():
                    return
                failures += 1
                if failures == 1:  # once per outage, not once per attempt
                    _log.warning("events.fetch_failed", durable=self.durable, error=repr(exc))
                if isinstance(exc, ServiceUnavailableError | NotFoundError):
                    await self._recreate()
                await self._pause(backoff(failures, base=0.1, cap=5.0))
                continue
            if failures:
                _log.info("events.fetch_resumed", durable=self.durable, failures=failures)
                failures = 0
            # Each message takes a slot now or goes back: the limit can have come down
            # while the fetch was out (a handler's release closed a window), and a fetch
            # can hand over more than it asked for. A slot is taken before any await, so
            # the count of handlers never passes the limit and never drifts.
            refused: list[Msg] = []
            for msg in messages:
                if self._limiter.try_acquire():
                    task = asyncio.create_task(self._handle(msg))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                else:
                    refused.append(msg)
            for msg in refused:
                with contextlib.suppress(Exception):
                    await msg.nak()

    def _connected(self) -> bool:
        # nats-py keeps the client on the context without a public accessor.
        return bool(self._js._nc.is_connected)

    async def _recreate(self) -> None:
        """Create the durable again when the server lost it (a NATS restarted without its
        store); when its stream is not back yet, the next failed fetch tries again."""
        try:
            await self._js.consumer_info(self.stream, self.durable)
            return  # it exists: the fetch failed for another reason
        except NotFoundError:
            pass
        except Exception:
            return
        try:
            await self._js.add_consumer(self.stream, self.config())
        except Exception:
            return
        self.recreated += 1
        _log.info("events.consumer_recreated", stream=self.stream, durable=self.durable)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- handling one message -----------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        """Handle ``msg`` in the slot ``_run`` took for it; the limit learns how long it
        was held (handler, ack and all)."""
        started = time.monotonic()
        try:
            await self._handle_one(msg)
        finally:
            now = time.monotonic()
            self._limiter.release(now - started, now)

    async def _handle_one(self, msg: Msg) -> None:
        headers = msg.headers or {}
        delivery = Delivery(
            msg.subject,
            msg.data,
            msg.metadata.num_delivered or 1,
            headers.get(REPLAY_OF_HEADER) or headers.get(MSG_ID_HEADER, ""),
        )
        started = time.monotonic()
        limit = asyncio.timeout(self._handler_timeout)
        try:
            async with self._in_progress(msg), limit:
                try:
                    await self._handler(delivery)
                finally:
                    self._duration.observe(time.monotonic() - started)
        except asyncio.CancelledError:
            # Closing mid-work: hand it back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            expired = isinstance(exc, TimeoutError) and limit.expired()
            error = f"handler timed out after {self._handler_timeout} s" if expired else repr(exc)
            await self._failed(msg, delivery, exc, error)
            return
        if await self._settle(msg.ack(), delivery):
            self.handled += 1
            self._handled_total.inc()

    @contextlib.asynccontextmanager
    async def _in_progress(self, msg: Msg) -> AsyncIterator[None]:
        """Tell the server every ``ack_wait / 3`` that ``msg`` is still being worked on."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._ack_wait / 3)
                # NATS away: the server redelivers after ack_wait, as it must.
                with contextlib.suppress(Exception):
                    await msg.in_progress()

        task = asyncio.create_task(beat(), name=f"in-progress-{self.durable}")
        try:
            yield
        finally:
            await stop_task(task)

    async def _failed(self, msg: Msg, delivery: Delivery, exc: Exception, error: str) -> None:
        kind = classify(exc)
        self._failed_total.labels(self.stream, self.durable, kind).inc()
        stored_at = msg.metadata.timestamp.timestamp()
        decision = self._policy.decide(
            kind, age=time.time() - stored_at, deliveries=delivery.attempt
        )
        if isinstance(decision, GiveUp):
            await self._dead_letter(msg, delivery, decision.reason, error, stored_at)
            return
        _log.warning(
            "events.handler_failed",
            durable=self.durable,
            subject=delivery.subject,
            attempt=delivery.attempt,
            kind=kind,
            retry_in=round(decision.delay, 3),
            error=error,
        )
        if await self._settle(msg.nak(delay=decision.delay), delivery):
            self.retried += 1

    async def _dead_letter(
        self, msg: Msg, delivery: Delivery, reason: str, error: str, stored_at: float
    ) -> None:
        headers = dead_letter_headers(
            subject=delivery.subject,
            stream=self.stream,
            sequence=msg.metadata.sequence.stream,
            durable=self.durable,
            reason=reason,
            error=error,
            deliveries=delivery.attempt,
            first_seen=stored_at,
            msg_id=delivery.msg_id,
        )
        try:
            await self._js.publish(
                dead_letter_subject(self.stream, self.durable),
                delivery.data,
                timeout=DEAD_LETTER_TIMEOUT,
                headers=headers,
            )
        except Exception as publish_error:  # keep it: it comes back after a back-off
            _log.error("events.dead_letter_failed", durable=self.durable, error=repr(publish_error))
            await self._settle(msg.nak(delay=self._policy.cap), delivery)
            return
        # Should the term be lost, the redelivery is dead-lettered again: its
        # Nats-Msg-Id makes the stream store it once.
        await self._settle(msg.term(), delivery)
        self.dead_lettered += 1
        self._dead_lettered_total.labels(self.stream, self.durable, reason).inc()
        _log.error(
            "events.dead_lettered",
            durable=self.durable,
            subject=delivery.subject,
            reason=reason,
            attempts=delivery.attempt,
            error=error,
        )

    async def _settle(self, reply: Awaitable[None], delivery: Delivery) -> bool:
        """Send an ack, nak or term; False (logged) when it could not be sent."""
        try:
            await reply
        except Exception as exc:  # the server redelivers it after ack_wait
            _log.warning(
                "events.ack_failed", durable=self.durable, subject=delivery.subject, error=repr(exc)
            )
            return False
        return True
