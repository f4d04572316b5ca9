"""A retry budget: retries may add at most a fixed fraction to the load. Pure logic.

Each request deposits ``ratio`` of a token; each retry withdraws one; a floor
of ``min_per_second`` tokens a second lets a quiet client still retry. The
balance never exceeds ``capacity``, so a long calm spell cannot bank a storm.
Callers pass ``now`` (monotonic seconds): the class does no I/O and no clock reads.
"""

from __future__ import annotations


class RetryBudget:
    """Token bucket bounding retries to ``ratio`` x requests + ``min_per_second`` x time."""

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        capacity: float = 100.0,
        now: float = 0.0,
    ) -> None:
        if ratio < 0 or min_per_second < 0 or capacity < 1:
            raise ValueError("ratio and min_per_second must be >= 0, capacity >= 1")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = capacity
        self._tokens = min(capacity, max(min_per_second, 1.0))
        self._stamp = now

    @property
    def tokens(self) -> float:
        """Tokens available now (as of the last update)."""
        return self._tokens

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(
                self.capacity, self._tokens + (now - self._stamp) * self.min_per_second
            )
            self._stamp = now

    def reconfigure(self, ratio: float, min_per_second: float) -> None:
        """Take new rates, keeping the tokens saved so far."""
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must be >= 0")
        self.ratio = ratio
        self.min_per_second = min_per_second

    def record_request(self, now: float) -> None:
        """Deposit the share of one first attempt."""
        # On every call: _refill inlined, a method call being a good part of the cost.
        tokens = self._tokens + self.ratio
        if now > self._stamp:
            tokens += (now - self._stamp) * self.min_per_second
            self._stamp = now
        self._tokens = tokens if tokens < self.capacity else self.capacity

    def try_acquire(self, now: float) -> bool:
        """Take one retry token if there is one; False means do not retry."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
