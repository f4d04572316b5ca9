"""Per-key token buckets (pure: the clock is handed in), bounded in the keys they hold."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucketLimiter:
    """Allows ``rate`` requests a second per key with bursts up to ``burst``.

    Holds at most ``max_keys`` buckets, forgetting the least recently used (a
    forgotten key starts again with a full bucket, which errs on allowing).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def try_acquire(self, key: str, now: float | None = None) -> float:
        """Take one token; returns 0.0 when allowed, else seconds until one is free."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
