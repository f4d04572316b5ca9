"""Event-loop lag: how late the loop runs what is due, the one resource a Python server
saturates.

An asyncio server waiting on a dependency holds a coroutine and a socket, not a thread:
it can wait on thousands of them at once. What it runs out of is its event loop's time.
Once the loop has more ready work than it can run, everything due on it runs late, and
the timer of a small probe does too: that lateness, the loop lag, is the queue in front
of this process's CPU, and nothing else raises it (a slow dependency makes calls slower,
not the loop later). Node's toobusy-js sheds on the same signal.

    every SAMPLE_EVERY s, while the process serves: late = when the probe ran - when it
    was due; lag = lag + (late - lag) x SMOOTHING     (exponential, so that one GC
                                                       pause is not an overload)

``LoopLag`` is the pure part (clock-free: fed the lateness); ``LagSampler`` drives it
with a timer of the running loop that runs only while work arrives: every call or
request ``touch``-es it (an attribute store; it arms the timer when idle), and a tick
with nothing touched since the last one lets it stop (the quiet spell then counts as
punctual probes), so an idle process, or a test whose loop is gone, keeps no timer
going. ``loop_lag()`` is the running loop's sampler,
shared by the HTTP edge and the gRPC server of a process.

Own code: the Python libraries that report loop lag are exporters for one framework or
patch asyncio's ``Handle`` (which uvloop does not use, and which would cost on every
callback); the probe is a dozen lines.

Metric: ``cellwork_event_loop_lag_seconds`` (the smoothed lag of the process's loop,
read at scrape time).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

from prometheus_client import Gauge

SAMPLE_EVERY = 0.05
"""Seconds between probes: 20 timer callbacks a second while serving, a few
microseconds each; an overload shows within a few of them."""

SMOOTHING = 1 / 3
"""Weight of the latest lateness (toobusy-js's): a lag held for ~6 probes (0.3 s) is
90 % in; a single 100 ms pause adds 33 ms, and is 90 % gone after ~6 probes."""

LOOP_LAG = "cellwork_event_loop_lag_seconds"


class LoopLag:
    """The smoothed lateness of a loop's timers (s). Pure: fed what was measured."""

    __slots__ = ("seconds", "smoothing")

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.smoothing = smoothing
        self.seconds = 0.0

    def observe(self, late: float) -> None:
        """Take in one probe that ran ``late`` seconds after it was due (negative: 0)."""
        self.seconds += (max(late, 0.0) - self.seconds) * self.smoothing

    def quiet(self, probes: float) -> None:
        """Take in a quiet spell as long as ``probes`` intervals: as many punctual
        probes (nothing of ours ran, so they would have been)."""
        self.seconds *= (1.0 - self.smoothing) ** max(probes, 0.0)


def shed_share(lag: float, max_lag: float) -> float:
    """The share of new work to refuse at ``lag`` (s): none up to ``max_lag``, then in
    proportion, all from twice ``max_lag`` (toobusy-js's ramp: a loop just past the
    threshold still serves most work, so the answer does not flap between all and none).
    """
    if lag <= max_lag:
        return 0.0
    return min(1.0, (lag - max_lag) / max_lag)


class LagSampler:
    """Measures the lag of the loop it is touched from, while it is touched.

    ``touch()`` on each unit of work (from that loop); ``seconds`` is the smoothed lag.
    Use from one loop only; no locks.
    """

    __slots__ = ("_due", "_handle", "_quiet_since", "_touched", "every", "lag")

    def __init__(self, every: float = SAMPLE_EVERY, smoothing: float = SMOOTHING) -> None:
        if every <= 0:
            raise ValueError("every must be > 0 seconds")
        self.every = every
        self.lag = LoopLag(smoothing)
        self._handle: asyncio.TimerHandle | None = None
        self._touched = False
        self._due = 0.0
        self._quiet_since: float | None = None

    @property
    def seconds(self) -> float:
        """The loop's smoothed lag now (s); while no work arrives, decayed as punctual
        probes would have (what ``touch`` takes in), not the last busy value."""
        if self._handle is None and self._quiet_since is not None:
            probes = max((time.monotonic() - self._quiet_since) / self.every, 0.0)
            decayed: float = self.lag.seconds * (1.0 - self.lag.smoothing) ** probes
            return decayed
        return self.lag.seconds

    def touch(self) -> None:
        """Note work arriving: the probe runs while work keeps arriving."""
        self._touched = True
        if self._handle is None:
            if self._quiet_since is not None:
                self.lag.quiet((time.monotonic() - self._quiet_since) / self.every)
            self._arm(asyncio.get_running_loop())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        # time.monotonic, not loop.time(): uvloop's clock ticks in whole milliseconds.
        self._due = time.monotonic() + self.every
        self._handle = loop.call_later(self.every, self._tick)

    def _tick(self) -> None:
        late = time.monotonic() - self._due
        self.lag.observe(late)
        if self._touched:
            self._touched = False
            self._arm(asyncio.get_running_loop())
        else:
            # Nothing arrived for a whole interval: stop until something does, and then
            # count the quiet spell as punctual probes, so that the first work after it
            # is not judged by the end of the last burst.
            self._handle = None
            self._quiet_since = self._due + late

    def stop(self) -> None:
        """Cancel the probe (it starts again at the next ``touch``)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


_lock = threading.Lock()
_samplers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LagSampler] = (
    weakref.WeakKeyDictionary()
)
_gauge: Gauge | None = None


def loop_lag() -> LagSampler:
    """The running loop's sampler, created on first use (one per loop, so that the edge
    and the gRPC server of a process read one probe). Call from inside the loop, once
    per user rather than per call."""
    global _gauge
    loop = asyncio.get_running_loop()
    with _lock:
        sampler = _samplers.get(loop)
        if sampler is None:
            sampler = _samplers[loop] = LagSampler()
            if _gauge is None:
                _gauge = Gauge(
                    LOOP_LAG,
                    "How late the process's event loop runs what is due, smoothed (s).",
                )
            # The latest loop's: a process serves from one.
            _gauge.set_function(lambda: sampler.seconds)
        return sampler
