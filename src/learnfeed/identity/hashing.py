"""Password hashing off the event loop, refused at once when its queue is full.

argon2 takes ~15 ms of CPU and 19 MiB a hash: one thread per core runs them (more
threads only share the same cores, and asyncio's default pool would run up to 32 at
once on a 2-core machine). What adapts is the queue in front of those threads: hashes
waiting or running are held to an adaptive concurrency limit (cellwork's, as every
server method has), learnt from how long a hash takes from submission to result.
Over the limit, or when the queue as it is now would not have hashed the call's
password before its deadline, the call is refused at once with ``Overloaded`` (503 +
Retry-After at the edge). Before, 40 sign-ups at once on a busy machine waited in an
unbounded queue, and 6 failed after their 2 s deadline had passed in it.

The time check (``too_late``) reads the queue now: ``(in_flight + 1) / threads`` hashes
of the time one hash takes on its thread (a smoothed average, timed inside the thread,
so that waiting in the queue does not count twice). It never refuses while a thread
is idle. An earlier check compared the call's time left with the mean submit-to-result
time of the last measured hashes: after a 3 s stall that mean stayed above the 2 s
deadline, every call was refused, none was hashed to bring it down, and 200 of 200
calls were refused with nothing in flight, for good.

A slot is held until the hash itself has finished (or was dropped before it started):
a caller that gives up cannot cancel a hash a thread is running, and that thread is
still busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

from prometheus_client import Counter, Gauge

from cellwork import Overloaded, current_call
from cellwork.resilience import ConcurrencyLimiter, LimitSettings

T = TypeVar("T")

SHED = Counter(
    "learnfeed_identity_hashing_shed_total",
    "Sign-ups and logins refused at once because the password-hashing queue was full.",
)
LIMIT = Gauge(
    "learnfeed_identity_hashing_limit",
    "The adaptive limit of password hashes queued or running at once.",
)
IN_FLIGHT = Gauge(
    "learnfeed_identity_hashing_in_flight",
    "Password hashes queued or running now.",
)

RETRY_AFTER = 1.0  # a queue of a few hashes per core drains in well under a second
# The weight of the latest hash in the smoothed hash time: a stalled hash weighs a few
# hashes' worth, and the hashes after it bring the average back within a few more.
HASH_TIME_SMOOTHING = 0.2


def cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def hashing_limits(threads: int) -> LimitSettings:
    """Between 4 and 32 hashes per thread queued or running, from 8.

    Never under 4 per thread: a sign-up burst of a few (the load generator signs up 4 at
    a time) is served, queued behind at most 4 hashes (~60 ms). A window needs 5 hashes
    only, since a busy pool completes few per window.
    """
    return LimitSettings(
        initial=8 * threads,
        min_limit=4 * threads,
        max_limit=32 * threads,
        min_samples=5,
    )


def too_late(remaining: float, in_flight: int, threads: int, hash_seconds: float) -> bool:
    """Whether a call with ``remaining`` seconds left would not be hashed in time by
    ``threads`` threads that have ``in_flight`` hashes queued or running, each taking
    ``hash_seconds`` on its thread. Never while a thread is idle: a hash started now
    is the call's best chance, and only hashes that run can correct ``hash_seconds``."""
    return in_flight >= threads and remaining < (in_flight + 1) / threads * hash_seconds


class HashingPool:
    """Runs hashing functions on a thread per core, refusing what its queue cannot take.

    ``run`` raises ``Overloaded`` at once instead of queueing past the limit or past the
    current call's deadline. Use from one event loop; ``close()`` when done.
    """

    def __init__(
        self,
        threads: int | None = None,
        limits: LimitSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threads = threads or cores()
        self._clock = clock
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2")
        self.hash_seconds = 0.0  # smoothed time one hash takes on its thread (0: none yet)
        self.limiter = ConcurrencyLimiter(limits or hashing_limits(self.threads), clock())
        limiter = self.limiter
        LIMIT.set_function(lambda: limiter.limit)
        IN_FLIGHT.set_function(lambda: limiter.in_flight)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a hashing thread; raises Overloaded at once when the queue is
        at its limit or would not run it before the current call's deadline
        (``too_late``)."""
        limiter = self.limiter
        call = current_call()
        remaining = call.time_remaining() if call is not None else None
        if remaining is not None and too_late(
            remaining, limiter.in_flight, self.threads, self.hash_seconds
        ):
            limiter.shed += 1
            self._refuse()
        if not limiter.try_acquire():
            self._refuse()
        loop = asyncio.get_running_loop()
        clock = self._clock
        ran: list[float] = []  # how long fn ran on its thread; empty if it never ran

        def timed() -> T:
            began = clock()
            try:
                return fn(*args)
            finally:
                ran.append(clock() - began)

        started = clock()
        try:
            future = self._executor.submit(timed)
        except RuntimeError:  # the pool is shut down: the instance is stopping
            limiter.release(0.0, started)
            raise

        def finished(_: Future[T]) -> None:
            # In the hashing thread, or here when dropped before it started.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._release, started, ran)

        future.add_done_callback(finished)
        return await asyncio.wrap_future(future)

    def _release(self, started: float, ran: list[float]) -> None:
        now = self._clock()
        self.limiter.release(now - started, now)
        if ran:
            previous = self.hash_seconds
            took = ran[0]
            self.hash_seconds = (
                took if previous == 0.0 else previous + (took - previous) * HASH_TIME_SMOOTHING
            )

    @staticmethod
    def _refuse() -> NoReturn:
        SHED.inc()
        raise Overloaded("password hashing is at its limit", retry_after=RETRY_AFTER)

    def close(self) -> None:
        """Stop the threads; hashes not started are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
