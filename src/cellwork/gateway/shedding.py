"""Shedding at the HTTP edge: the requests in flight held to an adaptive concurrency limit.

The edge saturates its own core before anything behind it does (MEASURED.md: a Python
edge answers thousands of requests a second, and two busy processes on one core hurt
the tail), so it keeps its own limit, the same one the gRPC servers keep per method
(``cellwork.resilience.adaptive``): one for the whole app, as Envoy's adaptive
concurrency filter keeps one per listener, since the routes share the one core. A
request over it is answered at once, before routing, with 503 ``overloaded`` and
``Retry-After: 1`` from the error table; nothing queues. Probes (``/healthz``,
``/readyz``, ``/metrics``) are never shed: a busy instance must not look dead to the
supervisor or Kubernetes and be restarted for being busy. WebSockets are not HTTP
requests here: push limits its sockets its own way.

Metrics (no labels: one edge per process): ``cellwork_http_shed_total``,
``cellwork_http_concurrency_limit``, ``cellwork_http_in_flight`` (the last two read at
scrape time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from cellwork.errors import Overloaded
from cellwork.gateway.errors import error_response
from cellwork.resilience.adaptive import ConcurrencyLimiter, LimitSettings
from cellwork.rpc.shedding import SHED_RETRY_AFTER

HTTP_SHED = "cellwork_http_shed_total"
HTTP_CONCURRENCY_LIMIT = "cellwork_http_concurrency_limit"
HTTP_IN_FLIGHT = "cellwork_http_in_flight"

EDGE_LIMITS = LimitSettings()
"""The edge's limit: from 100 requests in flight, between 20 and 1,000 (as a method's:
a benchmark's 64 connections are not shed at start-up, queueing brings it down)."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_lock = threading.Lock()
_metrics: tuple[Counter, Gauge, Gauge] | None = None


def edge_shed_metrics() -> tuple[Counter, Gauge, Gauge]:
    """Return (shed counter, limit gauge, in-flight gauge) of the process's HTTP edge."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = (
                Counter(HTTP_SHED, "HTTP requests answered 503 overloaded by the edge's limit."),
                Gauge(
                    HTTP_CONCURRENCY_LIMIT,
                    "The HTTP edge's adaptive concurrency limit: requests it lets in flight.",
                ),
                Gauge(HTTP_IN_FLIGHT, "HTTP requests in flight through the edge's limit."),
            )
        return _metrics


class LoadShedding:
    """ASGI middleware: at most the adaptive limit of requests in flight; the others are
    answered 503 overloaded with ``Retry-After`` at once. Paths in ``exempt`` pass
    without counting.

    ``limiter`` is this app's (one per app, read by the metrics of the latest one).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: LimitSettings = EDGE_LIMITS,
        exempt: Iterable[str] = PROBE_PATHS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limiter = ConcurrencyLimiter(limits, clock())
        self._exempt = frozenset(exempt)
        self._clock = clock
        # One answer, rendered once: shedding must cost less than serving.
        self._refusal = error_response(
            Overloaded("the server is at its concurrency limit", retry_after=SHED_RETRY_AFTER)
        )
        shed, limit, in_flight = edge_shed_metrics()
        self._shed = shed
        limiter = self.limiter
        limit.set_function(lambda: limiter.limit)
        in_flight.set_function(lambda: limiter.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        if not limiter.try_acquire():
            self._shed.inc()
            await self._refusal(scope, receive, send)
            return
        clock = self._clock
        started = clock()
        try:
            await self.app(scope, receive, send)
        finally:
            now = clock()
            limiter.release(now - started, now)
