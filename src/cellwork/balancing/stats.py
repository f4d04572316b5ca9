"""Per-endpoint load and health bookkeeping: pure state, no I/O.

Latency is a peak-sensitive, time-decayed EWMA (as Finagle's ``PeakEwma``): a
slower answer raises it at once, faster answers pull it down with time
constant ``tau``, and reading it while no answers arrive decays it towards
zero, so an endpoint that was slow gets probed again now and then instead of
starving forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cellwork.resilience.backoff import backoff_ceiling


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    """When to eject an endpoint and for how long."""

    consecutive_failures: int = 2
    base_seconds: float = 1.0
    max_seconds: float = 30.0

    def backoff(self, ejections: int) -> float:
        """Seconds the ``ejections``-th consecutive ejection lasts (doubling, capped).

        The ceiling of the shared back-off, without jitter: an ejection drawn near zero
        would send calls straight back to an endpoint that just refused two.
        """
        return backoff_ceiling(ejections, base=self.base_seconds, cap=self.max_seconds)


@dataclass(slots=True)
class EndpointStats:
    """Load and failure state of one endpoint; times are ``time.monotonic()`` seconds."""

    initial_latency: float = 0.001
    tau: float = 0.5
    in_flight: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    _ewma: float = field(default=-1.0, repr=False)
    _stamp: float = field(default=0.0, repr=False)

    def latency(self, now: float) -> float:
        """The decayed latency estimate at ``now``, in seconds."""
        if self._ewma < 0:
            return self.initial_latency
        elapsed = max(now - self._stamp, 0.0)
        return self._ewma * math.exp(-elapsed / self.tau)

    def cost(self, now: float) -> float:
        """Load score used by the picker: (in-flight + 1) x latency estimate."""
        return (self.in_flight + 1) * self.latency(now)

    def observe(self, seconds: float, now: float) -> None:
        """Fold one answer's latency into the estimate."""
        if self._ewma < 0:
            # The first answer also paid for connection set-up: blend it in
            # rather than let it count as a peak.
            self._ewma = (self.initial_latency + seconds) / 2.0
            self._stamp = now
            return
        current = self.latency(now)
        if seconds > current:
            self._ewma = seconds
        else:
            weight = math.exp(-max(now - self._stamp, 0.0) / self.tau)
            self._ewma = current * weight + seconds * (1.0 - weight)
        self._stamp = now

    def is_ejected(self, now: float) -> bool:
        """True while an ejection's back-off runs."""
        return now < self.ejected_until

    def record_success(self) -> None:
        """A call got an answer (any status but a connection failure)."""
        self.consecutive_failures = 0
        self.ejections = 0

    def record_failure(self, now: float, policy: EjectionPolicy) -> bool:
        """A call failed to connect; return True when this ejects the endpoint."""
        self.consecutive_failures += 1
        if self.consecutive_failures < policy.consecutive_failures:
            return False
        self.ejections += 1
        self.consecutive_failures = 0
        self.ejected_until = now + policy.backoff(self.ejections)
        return True
