"""The event ledger of a fault test: of every event a client was told was accepted,
was it delivered (seen in the consuming service's store), lost, or doubled?

The test ``accept``s each id the cell acknowledged (an interaction answered 202, say)
and hands ``settle`` a way to count what the consumer's store holds per id (a query of
its table); ``stream_copies`` counts the copies of each id in a JetStream stream, so a
publish stored twice under two sequence numbers shows as doubled even when the
consumer's own dedupe hides it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cellwork.events.publisher import MSG_ID_HEADER

Seen = Callable[[], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True, slots=True)
class LedgerReport:
    """Of the accepted ids: how many were delivered once, and which were lost or doubled."""

    accepted: int
    delivered: int
    lost: tuple[str, ...]
    doubled: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not self.lost and not self.doubled


class EventLedger:
    """The ids a cell acknowledged, reconciled against what its consumer stored."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()

    def accept(self, event_id: str) -> None:
        self.accepted.add(event_id)

    def reconcile(self, *copies: Mapping[str, int]) -> LedgerReport:
        """The report against counts of copies per id (several sources: the worst counts).

        An id is lost when a source holds no copy of it, doubled when one holds two or more.
        """
        lost = sorted(i for i in self.accepted if any(c.get(i, 0) == 0 for c in copies))
        doubled = sorted(i for i in self.accepted if any(c.get(i, 0) > 1 for c in copies))
        return LedgerReport(
            len(self.accepted),
            len(self.accepted) - len(set(lost) | set(doubled)),
            tuple(lost),
            tuple(doubled),
        )

    async def settle(self, *sources: Seen, timeout: float = 30.0) -> LedgerReport:
        """Reconcile until nothing is lost or ``timeout`` s passed (consumers catch up)."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.reconcile(*[await source() for source in sources])
            if not report.lost or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.5)


async def stream_copies(
    nats_url: str, stream: str, subject: str, ids: Iterable[str] | None = None
) -> Counter[str]:
    """How many messages of ``stream`` on ``subject`` carry each ``Nats-Msg-Id``
    (only ``ids``, when given). Reads the stream through an ephemeral consumer."""
    wanted = None if ids is None else set(ids)
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=2)
    counts: Counter[str] = Counter()
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if info.state.messages == 0:
            return counts
        sub = await js.pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        try:
            while True:
                try:
                    batch = await sub.fetch(512, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for msg in batch:
                    msg_id = (msg.headers or {}).get(MSG_ID_HEADER, "")
                    if wanted is None or msg_id in wanted:
                        counts[msg_id] += 1
                if batch and batch[-1].metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return counts
