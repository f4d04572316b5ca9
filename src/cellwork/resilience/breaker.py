"""A circuit breaker per target service: pure state, the clock passed in, no I/O.

    CLOSED ──(≥ failure_ratio of ≥ min_calls in the window failed)──> OPEN
    OPEN ──(open_seconds later, on the next call)──> HALF_OPEN
    HALF_OPEN ──(half_open_probes probes all succeeded)──> CLOSED
    HALF_OPEN ──(a probe failed)──> OPEN

CLOSED counts the outcome of every call in a rolling window of ``BUCKETS`` buckets
(a ring: a call costs an index and two additions, however many calls the window
holds). OPEN rejects every call. HALF_OPEN admits ``half_open_probes`` calls, the
probes, and rejects the rest until they have answered (their ``retry_after``: a
second, never 0). A call admitted before the circuit opened, or a probe of an earlier
half-open spell, changes nothing when it ends: ``admit`` hands out a ticket that
``record`` takes back.

What a call's outcome counts as (``outcome_of``):

- a failure: UNAVAILABLE from a server it reached (a refused connection is the
  balancer's business, not the service's), DEADLINE_EXCEEDED, INTERNAL, UNKNOWN,
  DATA_LOSS;
- a success: OK, and the answers about the request (INVALID_ARGUMENT, NOT_FOUND,
  ALREADY_EXISTS, FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED,
  UNIMPLEMENTED...): the server answered;
- nothing at all: RESOURCE_EXHAUSTED (rate limits, and servers shedding load:
  counting shed calls as failures would open the breaker under overload and cut the
  goodput to zero), a call that never reached a server, and the caller's own
  cancellation.

Own code rather than a library: pybreaker, aiobreaker, purgatory and circuitbreaker
open on consecutive failures (not a ratio over a window with a minimum of calls),
read the wall clock themselves and wrap the call, where this pipeline needs a
pure state machine it can drive from its own stage and test on a clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import grpc

from cellwork.resilience.policy import BreakerPolicy

BUCKETS = 10
"""Buckets of the rolling window: the window ends within a tenth of its length of ``now``."""

PROBES_RETRY_AFTER = 1.0
"""Seconds a half-open circuit asks rejected callers to wait while its probes are out:
about what a probe takes to answer (a feed read, a catalog lookup: well under one),
and the unit of HTTP ``Retry-After``."""

REJECTED = -1
"""``admit``'s ticket for a call the breaker rejects."""
ADMITTED = 0
"""``admit``'s ticket for a call of a closed circuit; probes get positive tickets."""


class BreakerState(IntEnum):
    """The state of a circuit; the value is what the state gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Outcome(IntEnum):
    """What one finished call tells the breaker."""

    SUCCESS = 0
    FAILURE = 1
    IGNORED = 2


# Members as module constants: reading ``BreakerState.CLOSED`` goes through the enum's
# metaclass (~75 ns on Python 3.11), and admit and record run on every call.
_CLOSED, _HALF_OPEN, _OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
_SUCCESS, _FAILURE, _IGNORED = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED

_FAILURE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
}
_IGNORED_CODES = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
_OUTCOMES = {
    code: Outcome.FAILURE
    if code in _FAILURE_CODES
    else Outcome.IGNORED
    if code in _IGNORED_CODES
    else Outcome.SUCCESS
    for code in grpc.StatusCode
}


def outcome_of(code: grpc.StatusCode, *, reached: bool = True) -> Outcome:
    """What a call that ended with ``code`` counts as; ``reached`` False for one that
    never reached a server (refused, failed to connect)."""
    return _OUTCOMES[code] if reached else Outcome.IGNORED


Transition = Callable[[BreakerState, BreakerState], None]
"""Called as ``on_transition(old, new)`` on every change of state."""


class CircuitBreaker:
    """The circuit to one target service; every method takes ``now`` (monotonic seconds)."""

    __slots__ = (
        "_bucket_end",
        "_calls",
        "_epoch",
        "_failures",
        "_newest",
        "_on_transition",
        "_open_until",
        "_probe_successes",
        "_probes_admitted",
        "_state",
        "_total_calls",
        "_total_failures",
        "_width",
        "policy",
    )

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        now: float = 0.0,
        on_transition: Transition | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._on_transition = on_transition
        self._state = _CLOSED
        self._open_until = 0.0
        self._epoch = 0  # half-open spells so far: a probe's ticket
        self._probes_admitted = 0
        self._probe_successes = 0
        self._width = self.policy.window_seconds / BUCKETS
        self._calls = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        self._total_calls = 0
        self._total_failures = 0
        self._newest = int(now / self._width)
        self._bucket_end = (self._newest + 1) * self._width  # when the newest bucket ends

    @property
    def state(self) -> BreakerState:
        """The state as of the last call (OPEN turns HALF_OPEN on the next ``admit``)."""
        return self._state

    def state_at(self, now: float) -> BreakerState:
        """The state a call would find at ``now`` (changes nothing)."""
        if self._state is _OPEN and now >= self._open_until:
            return _HALF_OPEN
        return self._state

    def window(self) -> tuple[int, int]:
        """(calls, failures) counted in the window now, while CLOSED."""
        return self._total_calls, self._total_failures

    def retry_after(self, now: float) -> float:
        """Seconds a rejected caller should wait: until an open circuit lets probes
        through; once it does (half-open, its probes taken), ``PROBES_RETRY_AFTER``, or
        ``open_seconds`` when shorter. Always positive: 0 would read as "now", when the
        probes have not answered yet and every call is refused."""
        left = self._open_until - now
        if left > 0.0:
            return left
        return min(PROBES_RETRY_AFTER, self.policy.open_seconds)

    def admit(self, now: float) -> int:
        """May a call go ahead? ``REJECTED`` (-1), ``ADMITTED`` (0), or a probe's ticket
        (> 0). Hand the ticket back to ``record`` when the call ends, whatever its end."""
        if self._state is _CLOSED:
            return ADMITTED
        if self._state is _OPEN:
            if now < self._open_until:
                return REJECTED
            self._epoch += 1
            self._probes_admitted = self._probe_successes = 0
            self._enter(_HALF_OPEN)
        if self._probes_admitted >= self.policy.half_open_probes:
            return REJECTED
        self._probes_admitted += 1
        return self._epoch

    def record(self, now: float, outcome: Outcome, ticket: int) -> None:
        """The call admitted with ``ticket`` ended with ``outcome``."""
        if ticket == ADMITTED:
            if self._state is not _CLOSED or outcome is _IGNORED:
                return
            if outcome is _SUCCESS and now < self._bucket_end:
                # The common case, on every call: a success in the newest bucket.
                self._calls[self._newest % BUCKETS] += 1
                self._total_calls += 1
                return
            self._count(now, outcome is _FAILURE)
            return
        if ticket != self._epoch or self._state is not _HALF_OPEN:
            return  # a probe of an earlier half-open spell
        if outcome is _FAILURE:
            self._open(now)
        elif outcome is _SUCCESS:
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._clear()
                self._enter(_CLOSED)
        else:
            self._probes_admitted -= 1  # told nothing: its slot goes to another probe

    def reconfigure(self, policy: BreakerPolicy, now: float) -> None:
        """Take new parameters, keeping the state (and the window's counts when the
        window keeps its length; an open circuit keeps its end)."""
        if policy.window_seconds != self.policy.window_seconds:
            self._width = policy.window_seconds / BUCKETS
            self._clear()
            self._newest = int(now / self._width)
            self._bucket_end = (self._newest + 1) * self._width
        self.policy = policy

    def _count(self, now: float, failed: bool) -> None:
        bucket = int(now / self._width)
        if bucket > self._newest:
            self._advance(bucket)
        # A call that ended a moment before the newest bucket began counts in it.
        slot = self._newest % BUCKETS
        self._calls[slot] += 1
        self._total_calls += 1
        if failed:
            self._failures[slot] += 1
            self._total_failures += 1
            policy = self.policy
            if (
                self._total_calls >= policy.min_calls
                and self._total_failures >= policy.failure_ratio * self._total_calls
            ):
                self._open(now)

    def _advance(self, bucket: int) -> None:
        """Empty the buckets between the newest and ``bucket``, which becomes the newest."""
        if bucket - self._newest >= BUCKETS:
            self._clear()
        else:
            for passed in range(self._newest + 1, bucket + 1):
                slot = passed % BUCKETS
                self._total_calls -= self._calls[slot]
                self._total_failures -= self._failures[slot]
                self._calls[slot] = self._failures[slot] = 0
        self._newest = bucket
        self._bucket_end = (bucket + 1) * self._width

    def _clear(self) -> None:
        for slot in range(BUCKETS):
            self._calls[slot] = self._failures[slot] = 0
        self._total_calls = self._total_failures = 0

    def _open(self, now: float) -> None:
        self._open_until = now + self.policy.open_seconds
        self._enter(_OPEN)

    def _enter(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if self._on_transition is not None:
            self._on_transition(old, state)
