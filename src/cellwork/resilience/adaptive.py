"""An adaptive concurrency limit: how much work may be in flight, learned from its latency.

Pure logic: callers pass the clock (monotonic seconds) and do the I/O; nothing here
reads a clock, sleeps or locks. It follows Netflix's Gradient2 (concurrency-limits,
``Gradient2Limit`` behind a ``WindowedLimit``), with the square-root queue allowance of
its first ``GradientLimit`` and of Envoy's adaptive concurrency filter
(``headroom = sqrt(limit)``):

    samples (latency of each finished call, in-flight count) fill a window that closes
    after 2 x its fastest call, kept within [min_window, max_window] seconds; a window
    with fewer than min_samples calls is dropped (too few to tell anything). Then:

    short     = mean latency of the window's calls
    long      = exponential average of ``short`` over ``long_window`` windows (a plain
                mean over the first 10): the latency the work has when it is not queued
    if long > 2 x short: long *= 0.95     (recovering after a long overload: the
                                           average must not keep the old, slow figure)
    if peak in-flight < limit / 2: keep   (the load did not test the limit: no evidence)
    gradient  = clamp(tolerance x long / short, 0.5, 1)
    target    = limit x gradient + sqrt(limit)          (the queue allowance)
    limit     = clamp(limit x (1 - smoothing) + target x smoothing, min_limit, max_limit)

At steady latency the gradient is 1 and the limit grows by ``smoothing x sqrt(limit)``
per window until the load stops using half of it; once queueing makes the short latency
pass ``tolerance`` times the long one, the gradient falls below 1 and the limit shrinks
(at most by half of ``smoothing`` a window: one slow window is no reason to shed most
of the traffic). Gradient2 compares with a long average rather than the minimum latency
seen (Vegas, the first Gradient), so it needs no periodic probe at a low limit, which
would shed while it probes.

Whose queue? Gradient2 reads any rise in latency as queueing for what the limit
guards, which holds where a slot is a thread, or work a struggling dependency must
take on. An asyncio server's call waiting on a dependency holds no such thing, and its
latency rises with the dependency's: at 200 calls/s, a dependency going from 5 to
300 ms took a method's limit from 100 to its floor of 20 (60 calls in flight needed)
and shed 1,695 of 4,000 calls in 20 s. So each sample says whether the resource was
``busy`` when the call finished (for a server: its event loop lagging,
``loop_lag.py``); a window most of whose calls found it free cannot shrink the limit:

    if not busy: gradient = 1; limit = max(limit, 2 x peak)   (its latency rose
                 elsewhere; slots cost nothing while the work only waits, so the
                 limit makes room for what the load holds in flight, at once)

``busy`` defaults to True: the classic Gradient2, as consumers and the hashing queue use.

``ConcurrencyLimiter`` puts a count of work in flight against the limit: ``try_acquire``
admits or refuses at once, never queues; ``release`` gives the slot back and feeds the
latency in. One limiter belongs to one event loop (or one thread): no locks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Gradient2's ExpAvgMeasurement: a plain mean over the first windows, so the long
# latency starts from what was measured, not from zero.
_WARMUP_WINDOWS = 10
_MIN_GRADIENT = 0.5
# Above this long/short ratio the long average is pulled down (Gradient2's recovery).
_RECOVERY_RATIO = 2.0
_RECOVERY_DECAY = 0.95


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """How an ``AdaptiveLimit`` moves. Times in seconds, limits in calls.

    ``initial``, within ``[min_limit, max_limit]``, is the limit before any window has
    closed; ``tolerance`` is how much slower than the long-term latency a window may be
    before the limit shrinks (Gradient2's ``rttTolerance``); ``smoothing`` in ``(0, 1]``
    is the share of each new target taken per window. Raises ValueError for settings
    out of range.
    """

    initial: int = 100
    min_limit: int = 20
    max_limit: int = 1000
    smoothing: float = 0.2
    tolerance: float = 1.5
    long_window: int = 600
    min_window: float = 0.1
    max_window: float = 1.0
    min_samples: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError("a limit needs 1 <= min_limit <= initial <= max_limit")
        if not 0 < self.smoothing <= 1 or self.tolerance < 1 or self.long_window < 1:
            raise ValueError("smoothing must be in (0, 1], tolerance >= 1, long_window >= 1")
        if not 0 < self.min_window <= self.max_window or self.min_samples < 1:
            raise ValueError("windows need 0 < min_window <= max_window and min_samples >= 1")


class AdaptiveLimit:
    """A concurrency limit moved by the latency of finished work (Gradient2, see module).

    ``limit`` is read on every admission: a plain attribute, recomputed only when a
    window closes. ``sample`` costs a few additions between windows.
    """

    __slots__ = (
        "_alpha",
        "_busy",
        "_count",
        "_estimate",
        "_fastest",
        "_long",
        "_peak",
        "_sum",
        "_window_end",
        "_windows",
        "limit",
        "long_rtt",
        "settings",
        "short_rtt",
    )

    def __init__(self, settings: LimitSettings | None = None, now: float = 0.0) -> None:
        self.settings = settings or LimitSettings()
        self._estimate = float(self.settings.initial)
        self.limit = self.settings.initial
        self.short_rtt = 0.0  # mean latency of the last window that counted (s)
        self.long_rtt = 0.0  # the long-term average of those (s)
        self._alpha = 2.0 / (self.settings.long_window + 1)
        self._windows = 0
        self._long = 0.0
        self._window_end = now + self.settings.min_window
        self._count = 0
        self._sum = 0.0
        self._fastest = math.inf
        self._peak = 0
        self._busy = 0

    def sample(self, rtt: float, in_flight: int, now: float, busy: bool = True) -> None:
        """Record one finished call: its latency ``rtt`` (s), the work in flight when it
        finished (itself included) and whether the resource the limit guards was
        ``busy`` then (see module). Closes the window when ``now`` is past its end."""
        self._count += 1
        self._sum += rtt
        self._busy += busy
        if rtt < self._fastest:
            self._fastest = rtt
        if in_flight > self._peak:
            self._peak = in_flight
        if now >= self._window_end:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        s = self.settings
        if self._count >= s.min_samples:
            self._update(self._sum / self._count, self._peak, 2 * self._busy >= self._count)
        self._window_end = now + min(max(2.0 * self._fastest, s.min_window), s.max_window)
        self._count, self._sum, self._fastest, self._peak = 0, 0.0, math.inf, 0
        self._busy = 0

    def _update(self, short: float, peak: int, busy: bool) -> None:
        s = self.settings
        if self._windows < _WARMUP_WINDOWS:
            self._windows += 1
            self._long += (short - self._long) / self._windows
        else:
            self._long += (short - self._long) * self._alpha
        long = self._long
        if long > _RECOVERY_RATIO * short:
            self._long = long * _RECOVERY_DECAY
        self.short_rtt, self.long_rtt = short, self._long
        estimate = self._estimate
        if peak < estimate / 2:
            return
        if busy and short > 0:
            gradient = max(_MIN_GRADIENT, min(1.0, s.tolerance * long / short))
        else:
            gradient = 1.0
        target = estimate * gradient + math.sqrt(estimate)
        estimate = estimate * (1 - s.smoothing) + target * s.smoothing
        if not busy:
            estimate = max(estimate, 2.0 * peak)
        self._estimate = min(max(estimate, float(s.min_limit)), float(s.max_limit))
        self.limit = int(self._estimate)


class ConcurrencyLimiter:
    """Work in flight held to an ``AdaptiveLimit``: admitted at once or refused at once.

    ``try_acquire()`` before the work, ``release(rtt, now)`` after it, whatever its
    outcome (a call cut off by its deadline took at least that long: counting it lets
    a stalled method shrink its limit). ``shed`` counts the refusals.
    """

    __slots__ = ("adaptive", "in_flight", "shed")

    def __init__(self, settings: LimitSettings | None = None, now: float = 0.0) -> None:
        self.adaptive = AdaptiveLimit(settings, now)
        self.in_flight = 0
        self.shed = 0

    @property
    def limit(self) -> int:
        """The limit work is admitted against now."""
        return self.adaptive.limit

    def try_acquire(self) -> bool:
        """Take a slot if the work in flight is under the limit; False (counted) if not."""
        if self.in_flight >= self.adaptive.limit:
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def release(self, rtt: float, now: float, busy: bool = True) -> None:
        """Give back a slot taken by ``try_acquire``; ``rtt`` is how long it was held (s),
        ``busy`` whether what the limit guards was saturated then (see module)."""
        self.adaptive.sample(rtt, self.in_flight, now, busy)
        self.in_flight -= 1
