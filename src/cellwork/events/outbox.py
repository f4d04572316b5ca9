"""The transactional outbox: events stored with the change they announce, relayed after.

A service that changes its database and must announce it writes the announcement in
the same transaction (``outbox.add(conn, ...)``), so the two commit or roll back
together; the relay publishes it afterwards. A process that dies between the commit
and the publish loses nothing: the row waits in the table.

    async def work(conn):
        ...                                            # the change
        return [await outbox.add(conn, "orders.placed", payload, msg_id=f"placed.{order}")]
    ids = await write_transaction(engine, work)
    await outbox.sent(ids, timeout=1.0)                # optional: wait for the announcement

The relay (one per instance, started and stopped by ``Service``):

- publishes its instance's rows in id order: a stream event with its ``Nats-Msg-Id``
  (awaiting the stream's ack), a broadcast on core NATS (flushed, so a later event
  cannot overtake it); a row is deleted only after it went out;
- is woken at once by ``wake()`` / ``sent()`` after a commit, and polls every
  ``poll_interval`` as a fallback;
- adopts the rows of another instance of its service whose claim is older than
  ``orphan_after`` (that instance died before relaying them: its rows go out, once,
  thanks to the dedupe ids; a restarted instance with the same id takes its own
  rows back at once). An instance that cannot send renews its claim meanwhile, so a
  NATS outage does not make siblings fight over each other's rows;
- when NATS is down or refuses, backs off and tries again; it never drops a row.

Why per-writer rows and not ``FOR UPDATE SKIP LOCKED``: skipping locked rows lets a
second relay publish later rows while the first still holds earlier ones, which
breaks the order of a broadcast and the event it must precede; and SQLite has no row
locks at all. Each instance relaying its own rows keeps the order and needs no lock
held across a publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.errors import Unavailable
from cellwork.events.outbox_table import Backlog, OutboxRow, OutboxTable, RowKind, insert_row
from cellwork.events.publisher import MSG_ID_HEADER
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import outbox_metrics
from cellwork.resilience.backoff import backoff
from cellwork.resilience.tasks import stop_task

_log = get_logger("cellwork.events.outbox")

AFTER_COMMIT = "outbox.after_commit"
"""The fault point between a commit and its relay (see ``cellwork.testing.faults``)."""

_REMEMBER_SENT = 4096  # ids sent lately, for a waiter that arrives after its rows went out


class Outbox:
    """One instance's outbox: add rows in a transaction, the relay sends them after."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        source: str,
        writer: str,
        poll_interval: float = 1.0,
        orphan_after: float = 10.0,
        batch: int = 100,
        publish_timeout: float = 2.0,
    ) -> None:
        if not source or not writer:
            raise ValueError("an outbox needs its service's name (source) and instance id")
        if poll_interval <= 0 or orphan_after <= 0 or batch < 1 or publish_timeout <= 0:
            raise ValueError("outbox intervals and timeouts must be > 0, batch >= 1")
        self.engine = engine
        self.source = source
        self.writer = writer
        self.poll_interval = poll_interval
        self.orphan_after = orphan_after
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.relayed = 0
        self._table = OutboxTable(engine, source, writer)
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._sent: OrderedDict[int, None] = OrderedDict()
        self._last_adoption = 0.0
        self._last_claim = 0.0
        self._pending, self._oldest = (g.labels(service=source) for g in outbox_metrics())

    # -- writing (inside the caller's transaction) -----------------------------------

    async def add(self, conn: AsyncConnection, subject: str, payload: bytes, msg_id: str) -> int:
        """Add a stream event to ``conn``'s transaction; returns the row's id.

        ``msg_id`` is its ``Nats-Msg-Id``: a row sent twice (after a crash) is stored
        once by the stream, within its duplicate window. Raises ValueError without one.
        """
        if not msg_id:
            raise ValueError("a stream event in the outbox needs a dedupe id (msg_id)")
        return await self._insert(conn, "stream", subject, payload, msg_id)

    async def add_broadcast(self, conn: AsyncConnection, subject: str, payload: bytes) -> int:
        """Add a core-NATS broadcast to ``conn``'s transaction; returns the row's id.

        It reaches whoever listens when it is relayed, before any row added after it.
        """
        return await self._insert(conn, "broadcast", subject, payload, "")

    async def _insert(
        self, conn: AsyncConnection, kind: RowKind, subject: str, payload: bytes, msg_id: str
    ) -> int:
        return await insert_row(
            conn,
            source=self.source,
            writer=self.writer,
            kind=kind,
            subject=subject,
            payload=payload,
            msg_id=msg_id,
        )

    # -- after the commit -------------------------------------------------------------

    def wake(self) -> None:
        """Tell the relay rows were committed (call it after the commit)."""
        # cellwork.testing.faults.TEST_FAULTS_ENV: test-only, imported only when armed.
        if os.environ.get("CELLWORK_TEST_FAULTS") == "1":
            from cellwork.testing.faults import fire

            fire(AFTER_COMMIT)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    @property
    def connected(self) -> bool:
        """True while the relay runs on a connected NATS client."""
        return self._task is not None and self._nc is not None and self._nc.is_connected

    async def sent(self, ids: Sequence[int], timeout: float) -> bool:
        """Wake the relay and wait, up to ``timeout`` s, until rows ``ids`` went out.

        Returns False at once when NATS is down (the rows go out when it is back),
        and False on timeout; never raises for either.
        """
        self.wake()
        waiting = [i for i in ids if i not in self._sent]
        if not waiting:
            return True
        if not self.connected or timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        futures = [self._waiters.setdefault(i, loop.create_future()) for i in waiting]
        try:
            done, pending = await asyncio.wait(futures, timeout=timeout)
            return not pending and not any(f.cancelled() for f in done)
        finally:
            for i in waiting:
                future = self._waiters.get(i)
                if future is not None and not future.done():
                    del self._waiters[i]
                    future.cancel()

    async def backlog(self) -> Backlog:
        """Rows of this service waiting (every instance's), and the oldest one's time."""
        return await self._table.backlog()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, nc: NatsClient) -> None:
        """Start relaying through ``nc`` (its JetStream and core NATS)."""
        self._nc = nc
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.source}")

    async def drain(self, timeout: float = 5.0) -> None:
        """Send this instance's rows (up to ``timeout`` s), then stop; the rest wait."""
        if self._task is not None and self.connected:
            self._kick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        await self.close()

    async def close(self) -> None:
        """Stop at once; rows not sent stay in the table for the next relay."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()

    # -- the relay ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                more = await self._relay_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                _log.warning(
                    "events.outbox_relay_failed",
                    source=self.source,
                    attempt=failures,
                    error=str(exc) or type(exc).__name__,
                )
                await self._keep_claim()
                await self._update_metrics()
                await asyncio.sleep(backoff(failures, base=0.2, cap=5.0))
                continue
            await self._update_metrics()
            if more or self._wake.is_set():
                continue
            self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _relay_once(self) -> bool:
        """Send one batch of this instance's rows; True when more may be waiting."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise Unavailable("not connected to NATS")
        # A long backlog takes a while to send: the claim on what is left is kept fresh,
        # or a sibling would take it for a dead instance's and send it too.
        await self._keep_claim()
        now = time.time()
        if now - self._last_adoption >= self.poll_interval:
            self._last_adoption = now
            adopted = await self._table.adopt_orphans(now - self.orphan_after)
            if adopted:
                _log.info("events.outbox_adopted", source=self.source, rows=adopted)
        rows = await self._table.own_rows(self.batch)
        sent: list[int] = []
        try:
            for row in rows:
                await self._send(nc, row)
                sent.append(row.id)
        finally:
            if sent:
                await self._table.delete(sent)
                self.relayed += len(sent)
                self._done(sent)
        return len(rows) == self.batch

    async def _send(self, nc: NatsClient, row: OutboxRow) -> None:
        if row.kind == "broadcast":
            await nc.publish(row.subject, row.payload)
            await nc.flush(timeout=math.ceil(self.publish_timeout))
            return
        await nc.jetstream().publish(
            row.subject,
            row.payload,
            timeout=self.publish_timeout,
            headers={MSG_ID_HEADER: row.msg_id},
        )

    def _done(self, ids: list[int]) -> None:
        for i in ids:
            self._sent[i] = None
            future = self._waiters.pop(i, None)
            if future is not None and not future.done():
                future.set_result(None)
        while len(self._sent) > _REMEMBER_SENT:
            self._sent.popitem(last=False)

    async def _keep_claim(self) -> None:
        """Renew this instance's claim on its rows, sending or not (not too often)."""
        now = time.time()
        if now - self._last_claim < self.orphan_after / 3:
            return
        self._last_claim = now
        try:
            await self._table.renew_claim()
        except Exception as exc:
            _log.warning("events.outbox_relay_failed", source=self.source, error=str(exc))

    async def _update_metrics(self) -> None:
        try:
            backlog = await self._table.backlog()
        except Exception:  # the database is away: the relay's own failure says so
            return
        self._pending.set(backlog.pending)
        oldest = backlog.oldest_created_at
        self._oldest.set(0.0 if oldest is None else max(time.time() - oldest, 0.0))
