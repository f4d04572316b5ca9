"""Shedding at the HTTP edge: refuse requests while the event loop is saturated.

What a Python edge runs out of is its event loop (MEASURED.md: one core serves a few
thousand requests a second, and two busy processes on one core hurt the tail), not
slots: a request waiting on a service holds a coroutine and a socket. So the edge sheds
on the loop's lag (``cellwork.resilience.loop_lag``: how late a probe timer runs), and
never on how long requests take. It used to hold requests to an adaptive concurrency
limit learnt from their latency, which is mostly waiting on the services behind it:
at 200 requests/s, a dependency going from 5 to 300 ms took that limit from 100 to 20
(60 requests in flight needed) and shed 1,695 of 4,000 requests in 20 s, and a slow
catalog turned ``/v1/home`` into 503s where it should have answered 200 with
``partial``. Now:

    lag <= max_lag (150 ms)         every request is served
    max_lag < lag < 2 x max_lag     a share (lag - max_lag) / max_lag is refused, at random
    lag >= 2 x max_lag              every request is refused
    in flight >= max_in_flight      refused whatever the lag: a hard ceiling on memory
                                    (1,000: 200 requests/s waiting out a 2 s deadline
                                    hold 400)

150 ms: an idle loop's probe runs within a millisecond and a busy but healthy one's
within a few; a loop 150 ms late adds that to each step of every request (several
steps a request), well past what a user waits for without noticing, and still leaves a
2 s request most of its deadline. 75 ms (toobusy-js's default) shed a few requests at
the start of every chaos run on a 2-core machine running a whole cell: a burst of new
connections, or a GC pause, lifted the smoothed lag past it for a moment, which is not
an overload. The lag is smoothed (a GC pause or one slow request adds a third of
itself), and the ramp keeps the edge serving most requests just past the
threshold instead of flapping between all and none.

A refused request is answered at once, before routing, with 503 ``overloaded`` and
``Retry-After: 1`` from the error table; nothing queues. Probes (``/healthz``,
``/readyz``, ``/metrics``) are never shed and do not count: a busy instance must not
look dead to the supervisor or Kubernetes and be restarted for being busy. WebSockets
are not HTTP requests here: push limits its sockets its own way.

Metrics (no labels: one edge per process): ``cellwork_http_shed_total``,
``cellwork_http_concurrency_limit`` (the ceiling), ``cellwork_http_in_flight`` (read at
scrape time), and the loop's ``cellwork_event_loop_lag_seconds``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from cellwork.errors import Overloaded
from cellwork.gateway.errors import error_response
from cellwork.resilience.loop_lag import LagSampler, loop_lag, shed_share
from cellwork.rpc.shedding import SHED_RETRY_AFTER

HTTP_SHED = "cellwork_http_shed_total"
HTTP_CONCURRENCY_LIMIT = "cellwork_http_concurrency_limit"
HTTP_IN_FLIGHT = "cellwork_http_in_flight"


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """When the edge refuses requests: ``max_lag`` seconds of event-loop lag, from which
    a share is refused (all from twice it), and ``max_in_flight`` requests at once, a
    hard ceiling. Raises ValueError for a value that is not positive."""

    max_lag: float = 0.15
    max_in_flight: int = 1000

    def __post_init__(self) -> None:
        if self.max_lag <= 0 or self.max_in_flight < 1:
            raise ValueError("an edge needs max_lag > 0 and max_in_flight >= 1")


EDGE_LIMITS = EdgeLimits()
"""The edge's limits: shedding from 150 ms of loop lag, at most 1,000 requests at once."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_lock = threading.Lock()
_metrics: tuple[Counter, Gauge, Gauge] | None = None


def edge_shed_metrics() -> tuple[Counter, Gauge, Gauge]:
    """Return (shed counter, ceiling gauge, in-flight gauge) of the process's HTTP edge."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = (
                Counter(
                    HTTP_SHED,
                    "HTTP requests answered 503 overloaded by the edge (its loop saturated, "
                    "or its ceiling of requests in flight reached).",
                ),
                Gauge(
                    HTTP_CONCURRENCY_LIMIT,
                    "The most HTTP requests the edge lets in flight at once (a fixed ceiling).",
                ),
                Gauge(HTTP_IN_FLIGHT, "HTTP requests in flight through the edge's shedding."),
            )
        return _metrics


class LoadShedding:
    """ASGI middleware: requests are answered 503 overloaded with ``Retry-After`` at once
    while the event loop lags past ``limits.max_lag`` (a share, then all) or when
    ``limits.max_in_flight`` are in flight. Paths in ``exempt`` pass without counting.

    ``lag`` is the loop's sampler (the running loop's on the first request unless
    given); ``draw`` returns a number in [0, 1) per request considered for shedding.
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: EdgeLimits = EDGE_LIMITS,
        exempt: Iterable[str] = PROBE_PATHS,
        lag: LagSampler | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0
        self.shed = 0
        self._lag = lag
        self._draw = draw
        self._exempt = frozenset(exempt)
        # One answer, rendered once: shedding must cost less than serving.
        self._refusal = error_response(
            Overloaded("the server is overloaded", retry_after=SHED_RETRY_AFTER)
        )
        shed, ceiling, in_flight = edge_shed_metrics()
        self._shed_total = shed
        ceiling.set(limits.max_in_flight)
        in_flight.set_function(lambda: self.in_flight)

    @property
    def lag(self) -> LagSampler:
        """The sampler of the loop this edge serves from."""
        if self._lag is None:
            self._lag = loop_lag()
        return self._lag

    def refuses(self, lag: float) -> bool:
        """Whether a request arriving at a loop lag of ``lag`` seconds is refused (then
        counted as shed)."""
        limits = self.limits
        if self.in_flight < limits.max_in_flight:
            if lag <= limits.max_lag:
                return False  # the usual case: one comparison
            share = shed_share(lag, limits.max_lag)
            if share < 1.0 and self._draw() >= share:
                return False
        self.shed += 1
        self._shed_total.inc()
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        sampler = self._lag or self.lag
        sampler.touch()
        if self.refuses(sampler.lag.seconds):
            await self._refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
