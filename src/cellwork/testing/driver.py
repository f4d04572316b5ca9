"""An open-loop driver that records every request, for fault tests.

Requests leave on ``cellwork.loadgen``'s ``Pacer`` schedule whatever the answers do,
so a fault shows as failed or late answers, never as a client that politely waited.
Unlike ``LoadRun`` (which aggregates), the driver keeps one ``Record`` per request:
a fault test asks how many requests of a route failed, and when, against the
``marks`` it set while the load ran (``driver.mark("nats killed")``).

The driver measures itself: each record says how late its request left
(``lag``). A run whose client fell behind (``Drive.behind``) says nothing about
the service and is retried, not failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from cellwork.loadgen.pacing import Pacer

MAX_LAG_P99 = 0.25  # seconds: later than this at p99 and the run is inconclusive


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got: its route, HTTP status (0: no answer) and error kind."""

    route: str
    status: int = 0
    error: str = ""
    key: str = ""  # the request's own id, e.g. an interaction's idempotency key
    detail: str = ""  # what a failed answer said (its error code), for the failure report


@dataclass(frozen=True, slots=True)
class Record:
    """One request: when it was due and left, how long it took from due, what it got."""

    index: int
    route: str
    scheduled: float  # seconds from the start of the run
    lag: float  # seconds its send started after it was due
    latency: float  # seconds from due to answer
    status: int
    error: str
    key: str
    detail: str = ""

    def ok(self, expected: Iterable[int]) -> bool:
        return not self.error and self.status in tuple(expected)


Request = Callable[[int], Awaitable[Answer]]


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Drive:
    """The records of one run and the marks set while it ran."""

    rate: float
    duration: float
    records: list[Record] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    dropped: int = 0  # due while the in-flight bound was full (answers overdue): never sent
    max_lag_p99: float = MAX_LAG_P99  # seconds: later than this at p99 and it is inconclusive

    @property
    def lag_p99(self) -> float:
        return _quantile([r.lag for r in self.records], 0.99)

    @property
    def behind(self) -> bool:
        """Whether the client itself fell behind its schedule (the run is inconclusive).

        Requests dropped at the in-flight bound are not the client's lag: answers that
        did not come back filled it, so they count against the service (``dropped``).
        """
        return self.lag_p99 > self.max_lag_p99

    def of(
        self, route: str | None = None, *, after: float | None = None, before: float | None = None
    ) -> list[Record]:
        """Records of ``route`` (all routes when None) due within [after, before)."""
        return [
            r
            for r in self.records
            if (route is None or r.route == route)
            and (after is None or r.scheduled >= after)
            and (before is None or r.scheduled < before)
        ]

    def failed(self, route: str, expected: Iterable[int], **window: float | None) -> list[Record]:
        """Records of ``route`` in the window whose answer was not one of ``expected``."""
        allowed = tuple(expected)
        return [r for r in self.of(route, **window) if not r.ok(allowed)]

    def latency(self, route: str, q: float, **window: float | None) -> float:
        """The ``q`` quantile of ``route``'s latency (seconds from due) in the window."""
        return _quantile([r.latency for r in self.of(route, **window)], q)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per route: requests, failures by status or error, p50 and p99 in ms."""
        out: dict[str, dict[str, float | int]] = {}
        for route in sorted({r.route for r in self.records}):
            rows = self.of(route)
            counts: dict[str, float | int] = {"requests": len(rows)}
            for r in rows:
                outcome = r.error or str(r.status)
                counts[outcome] = int(counts.get(outcome, 0)) + 1
            counts["p50_ms"] = round(self.latency(route, 0.5) * 1000, 1)
            counts["p99_ms"] = round(self.latency(route, 0.99) * 1000, 1)
            out[route] = counts
        out["client"] = {
            "lag_p99_ms": round(self.lag_p99 * 1000, 1),
            "dropped": self.dropped,
        }
        return out


class OpenLoopDriver:
    """Sends ``request(i)`` for i = 0, 1, ... at ``rate`` a second for ``duration`` s.

    ``request`` must not raise for a failed answer (return an ``Answer`` naming it);
    an exception it raises is recorded as that request's error kind. ``mark(name)``
    notes the run's clock now; ``stop()`` ends the sending early. One run per driver.
    """

    def __init__(
        self,
        rate: float,
        duration: float,
        request: Request,
        *,
        max_in_flight: int = 1024,
        max_lag_p99: float = MAX_LAG_P99,
    ) -> None:
        self._pacer = Pacer(rate, duration)
        self._request = request
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._start: float | None = None
        self._stopping = False
        self.drive = Drive(rate, duration, max_lag_p99=max_lag_p99)

    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        return 0.0 if self._start is None else time.monotonic() - self._start

    def mark(self, name: str) -> float:
        """Note ``name`` at the run's clock now; returns that time."""
        at = self.elapsed()
        self.drive.marks[name] = at
        return at

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> Drive:
        """Drive the whole schedule, wait for every answer, return the records."""
        self._start = start = time.monotonic()
        pacer = self._pacer
        async with asyncio.TaskGroup() as tasks:
            index = 0
            while index < pacer.total and not self._stopping:
                due = pacer.due(time.monotonic() - start)
                while index < due:
                    if self._in_flight >= self._max_in_flight:
                        self.drive.dropped += 1
                    else:
                        self._in_flight += 1
                        tasks.create_task(self._one(index, pacer.send_at(index)))
                    index += 1
                if index < pacer.total:
                    wait = start + pacer.send_at(index) - time.monotonic()
                    await asyncio.sleep(max(0.0, wait))
        return self.drive

    async def _one(self, index: int, scheduled: float) -> None:
        assert self._start is not None
        lag = time.monotonic() - self._start - scheduled
        try:
            try:
                answer = await self._request(index)
            except Exception as exc:  # recorded, never hidden
                answer = Answer("?", 0, type(exc).__name__)
            latency = time.monotonic() - self._start - scheduled
            self.drive.records.append(
                Record(
                    index,
                    answer.route,
                    scheduled,
                    lag,
                    latency,
                    answer.status,
                    answer.error,
                    answer.key,
                    answer.detail,
                )
            )
        finally:
            self._in_flight -= 1


async def drive_during(
    driver: OpenLoopDriver, fault: Callable[[OpenLoopDriver], Awaitable[None]]
) -> Drive:
    """Run ``driver`` and, beside it, ``await fault(driver)`` (which marks what it does).

    The fault is cancelled if the load ends first; the load is stopped if the fault
    raises, and the error is raised here.
    """
    load = asyncio.create_task(driver.run())
    try:
        await fault(driver)
    except BaseException:
        driver.stop()
        with contextlib.suppress(Exception):
            await load
        raise
    return await load
