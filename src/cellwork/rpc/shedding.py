"""Shedding at the server: the concurrency-limit stage of the server chain, and its metrics.

Each unary method of a server gets its own ``ConcurrencyLimiter`` (an adaptive limit,
``cellwork.resilience.adaptive``). A call that finds the method's in-flight work at its
limit is refused at once, before any layer or the handler runs: RESOURCE_EXHAUSTED with
the error trailer of ``Overloaded`` and a retry-after of ``SHED_RETRY_AFTER``, which
the caller's client raises as ``Overloaded`` and the HTTP edge answers as 503 with
``Retry-After``. Nothing waits in a queue: work a server cannot start now only grows
older there, past its caller's deadline (identity's hashing queue did exactly that
under 40 sign-ups at once), while a refusal lets the caller go elsewhere or degrade.

Per method, not per server: a slow method (a sign-up hashing a password) must not take
the slots of a fast one, and each learns its own latency. The refusal is the trailer
and status only (built once per method): no exception object, no log line, so a
server busy refusing spends as little as it can on it.

A limit shrinks only for queueing in this process: each call tells its limiter whether
the event loop was lagging (``resilience/loop_lag.py``, smoothed lag of at least
``SATURATED_LAG``) when it finished. A handler waiting on a slow dependency holds a
coroutine, not a thread, and the loop stays free: its method's limit then holds and
makes room for what is in flight (``resilience/adaptive.py``), where it used to fall
to its floor (at 200 calls/s and a dependency slowed from 5 to 300 ms, 60 calls in
flight against a limit of 20: 1,695 of 4,000 calls shed in 20 s). A handler that burns
the loop's CPU (or a flood of light calls) makes the loop lag, and the limit shrinks as
Gradient2 has it. Raising the floor instead would have had to fit rate x deadline (200
calls/s x 1 s = 200 in flight) and would then queue 200 x 30 ms = 6 s of CPU-heavy calls
before shedding any: past every deadline.

Metrics, all labelled by service and method: ``cellwork_rpc_server_shed_total`` (calls
the limit refused), ``cellwork_rpc_server_concurrency_limit`` (the limit now, read at
scrape time), ``cellwork_rpc_server_refusal_seconds`` (receive -> refusal of every call
answered RESOURCE_EXHAUSTED, recorded by the boundary); the in-flight gauge is the
boundary's ``cellwork_rpc_server_in_flight``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from grpc import aio
from prometheus_client import Counter, Gauge, Histogram

from cellwork.errors import Overloaded, error_trailers
from cellwork.resilience.adaptive import ConcurrencyLimiter, LimitSettings
from cellwork.resilience.loop_lag import loop_lag

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]

RPC_SERVER_SHED = "cellwork_rpc_server_shed_total"
RPC_SERVER_CONCURRENCY_LIMIT = "cellwork_rpc_server_concurrency_limit"
RPC_SERVER_REFUSAL = "cellwork_rpc_server_refusal_seconds"

SHED_RETRY_AFTER = 1.0
"""Seconds a shed call's caller is told to wait (``Retry-After: 1`` at the edge): a
slot frees within a call's latency, and the edge rounds up to whole seconds anyway."""

SERVER_LIMITS = LimitSettings()
"""Each method's limit: from 100 calls in flight, between 20 and 1,000. It starts high
so that a burst at start-up (64 connections of a benchmark) is not shed before the
limit has learnt anything; it falls to 20 within a few seconds of queueing. Below 20
a method is never shed: that little work in flight queues for milliseconds at most."""

SATURATED_LAG = 0.01
"""Loop lag (s) from which a server's loop counts as queueing its calls. An idle loop's
probe runs within a millisecond; a light call costs ~150 us of loop time, so 10 ms is
some 70 of them ready at once, and a CPU-heavy one (the chaos suite's 30 ms a call)
passes it with one call running. Well under the edge's shedding threshold: a method
stops growing its limit long before the edge refuses requests."""

# A refusal is answered in microseconds on an idle core; the chaos suite holds shed
# answers under 20 ms at the server, so the buckets resolve that range finely.
REFUSAL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0)

_SHED_MESSAGE = "the server is at its concurrency limit for this method"


class ShedMetrics:
    """The shedding metrics of a process (one set, labelled by service and method)."""

    def __init__(self) -> None:
        self.shed = Counter(
            RPC_SERVER_SHED,
            "RPCs refused at once because the method was at its concurrency limit.",
            ["service", "method"],
        )
        self.limit = Gauge(
            RPC_SERVER_CONCURRENCY_LIMIT,
            "The adaptive concurrency limit of a method: RPCs it lets in flight at once.",
            ["service", "method"],
        )
        self.refusal = Histogram(
            RPC_SERVER_REFUSAL,
            "Time from receiving an RPC to refusing it with RESOURCE_EXHAUSTED (shed by the "
            "limit or refused by its handler as overloaded), in seconds.",
            ["service", "method"],
            buckets=REFUSAL_BUCKETS,
        )


_lock = threading.Lock()
_metrics: ShedMetrics | None = None


def shed_metrics() -> ShedMetrics:
    """Return the process's shedding metrics (created on first use)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = ShedMetrics()
        return _metrics


def limit_stage(
    service: str,
    method: str,
    limiter: ConcurrencyLimiter,
    inner: Handler,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Handler:
    """Wrap ``inner`` so that at most ``limiter.limit`` calls run it at once; the others
    are refused with RESOURCE_EXHAUSTED (``Overloaded``) without running it.

    The limiter learns from the time each admitted call holds its slot, cancelled calls
    included (a deadline cut them off: they took at least that long), and whether the
    process's loop was lagging (``SATURATED_LAG``) when it finished. Build it inside the
    server's event loop.
    """
    metrics = shed_metrics()
    shed = metrics.shed.labels(service, method)
    metrics.limit.labels(service, method).set_function(lambda: limiter.limit)
    trailers = error_trailers(Overloaded(_SHED_MESSAGE, retry_after=SHED_RETRY_AFTER))
    exhausted = Overloaded.code
    sampler = loop_lag()
    lag = sampler.lag  # read per call: the attribute, not the property

    async def limited(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        sampler.touch()  # shed calls too: the probe must run while the loop is full
        if not limiter.try_acquire():
            shed.inc()
            await context.abort(exhausted, _SHED_MESSAGE, trailers)
        started = clock()
        try:
            return await inner(request, context)
        finally:
            now = clock()
            limiter.release(now - started, now, lag.seconds >= SATURATED_LAG)

    return limited
