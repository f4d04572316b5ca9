"""Per-endpoint load and health bookkeeping: pure state, no I/O, the clock passed in.

Latency is a peak-sensitive, time-decayed EWMA (as Finagle's ``PeakEwma``): a
slower answer raises it at once, faster answers pull it down with time
constant ``tau``, and reading it while no answers arrive decays it towards
zero, so an endpoint that was slow gets probed again now and then instead of
starving forever.

That decay alone would favour an endpoint that stopped answering (a process
SIGSTOPped, a host black-holed): no answer ever raises its estimate, which falls
towards zero while its calls pile up. So the estimate is never below the mean age
of the endpoint's outstanding calls. Kept as a sum of their start times beside the
in-flight count, it costs two additions a call and no allocation; the mean rather
than the oldest, which would need the start times kept one by one.

A failed answer or a shed is no measure of how fast the endpoint serves: an INTERNAL
answered in 0.2 ms, folded in as a latency, would make the failing endpoint the
cheapest of all and p2c would send it nearly every call (measured: 399 of 400 calls
failed with two of three instances failing fast). So those are *penalties*
(``penalize``): the estimate becomes the larger of the answer's latency and the
current estimate times ``factor`` (2, and for failed answers 2 per failure in a row,
so that an endpoint failing on and on is probed ever less often), never above
``PENALTY_CAP_SECONDS`` unless it was there already: never lower than before, and
bounded, so that the decay brings it back for a probe within seconds.

Health is counted in a row: ``EjectionPolicy.consecutive_failures`` failed answers
(UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED) or ``consecutive_refusals`` refused
connections ask for an ejection; any other answer resets both counts. Whether an
endpoint may be ejected at all is the balancer's call (it knows how many are
ejected already): ``may_eject``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc

from cellwork.resilience.policy import EjectionPolicy

__all__ = [
    "FAILED_ANSWERS",
    "PENALTY_CAP_SECONDS",
    "EjectionPolicy",
    "EndpointStats",
    "may_eject",
]

FAILED_ANSWERS = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
)
"""The statuses that count towards ejecting the endpoint that answered them."""

PENALTY_CAP_SECONDS = 5.0
"""How high a penalty may double the estimate: the default call timeout, so a failing
endpoint looks no worse than one whose calls time out, and decays back to a few
milliseconds in about 3.5 s (``tau`` 0.5 s) to be probed again."""


@dataclass(slots=True)
class EndpointStats:
    """Load and failure state of one endpoint; times are ``time.monotonic()`` seconds."""

    initial_latency: float = 0.001
    tau: float = 0.5
    in_flight: int = 0
    started_sum: float = 0.0  # sum of the start times of the calls in flight
    calls: int = 0  # attempts sent to the endpoint, ever (a metric reads it)
    consecutive_failures: int = 0
    consecutive_refusals: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    _ewma: float = field(default=-1.0, repr=False)
    _stamp: float = field(default=0.0, repr=False)

    def latency(self, now: float) -> float:
        """The latency estimate at ``now``, in seconds: the decayed EWMA, but at least
        the mean age of the calls in flight."""
        if self._ewma < 0:
            estimate = self.initial_latency
        else:
            estimate = self._ewma * math.exp(-max(now - self._stamp, 0.0) / self.tau)
        if self.in_flight > 0:
            waited = now - self.started_sum / self.in_flight
            if waited > estimate:
                return waited
        return estimate

    def cost(self, now: float) -> float:
        """Load score used by the picker: (in-flight + 1) x latency estimate."""
        return (self.in_flight + 1) * self.latency(now)

    def begin(self, now: float) -> None:
        """A call to the endpoint starts at ``now``."""
        self.in_flight += 1
        self.started_sum += now
        self.calls += 1

    def end(self, started: float) -> None:
        """The call started at ``started`` is over, whatever its outcome."""
        self.in_flight -= 1
        # Reset at zero so that float error cannot build up over millions of calls.
        self.started_sum = self.started_sum - started if self.in_flight > 0 else 0.0

    def observe(self, seconds: float, now: float) -> None:
        """Fold one answer's latency into the estimate."""
        if self._ewma < 0:
            # The first answer also paid for connection set-up: blend it in
            # rather than let it count as a peak.
            self._ewma = (self.initial_latency + seconds) / 2.0
            self._stamp = now
            return
        elapsed = max(now - self._stamp, 0.0)
        current = self._ewma * math.exp(-elapsed / self.tau)
        if seconds > current:
            self._ewma = seconds
        else:
            weight = math.exp(-elapsed / self.tau)
            self._ewma = current * weight + seconds * (1.0 - weight)
        self._stamp = now

    def penalize(self, seconds: float, now: float, factor: float = 2.0) -> None:
        """Fold a failed answer, a refused connection or a shed, which took ``seconds``:
        the estimate becomes ``max(seconds, current x factor)`` (the doubled part at
        most ``PENALTY_CAP_SECONDS``); it never gets lower."""
        current = self.latency(now)
        doubled = current * factor
        if doubled > PENALTY_CAP_SECONDS:
            doubled = max(PENALTY_CAP_SECONDS, current)
        self._ewma = max(seconds, doubled)
        self._stamp = now

    def is_ejected(self, now: float) -> bool:
        """True while an ejection runs."""
        return now < self.ejected_until

    def record_success(self, now: float, policy: EjectionPolicy) -> None:
        """The endpoint answered, and not with a failure: the counts in a row restart.

        The ejection multiplier is forgiven once the endpoint has served well for
        ``base_seconds`` after its last ejection ended.
        """
        self.consecutive_failures = 0
        self.consecutive_refusals = 0
        if self.ejections and now - self.ejected_until >= policy.base_seconds:
            self.ejections = 0

    def record_failure(self, policy: EjectionPolicy, *, refused: bool) -> bool:
        """A failed answer, or a refused connection (``refused``); True when this one
        reaches the policy's count in a row, asking for an ejection."""
        if refused:
            self.consecutive_refusals += 1
            return self.consecutive_refusals >= policy.consecutive_refusals
        self.consecutive_refusals = 0
        self.consecutive_failures += 1
        return self.consecutive_failures >= policy.consecutive_failures

    def eject(self, now: float, policy: EjectionPolicy, draw: float) -> float:
        """Eject the endpoint from ``now``; returns the seconds it lasts (``draw`` in
        [0, 1) picks the jitter)."""
        self.ejections += 1
        self.consecutive_failures = 0
        self.consecutive_refusals = 0
        seconds = policy.duration(self.ejections, draw)
        self.ejected_until = now + seconds
        return seconds


def may_eject(ejected: int, serving: int, policy: EjectionPolicy) -> bool:
    """Whether one more of ``serving`` endpoints may be ejected while ``ejected`` are:
    never past ``max_ejected_fraction`` of them (so never the only one)."""
    return ejected + 1 <= policy.max_ejected_fraction * serving
