"""The open-loop schedule: when each request is due, whatever the answers do."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pacer:
    """An open-loop schedule: request ``i`` is due at ``i / rate`` seconds, whatever came back.

    ``total`` requests fit in ``duration``: every send time is strictly before it.
    Times are seconds from the start of the run on the caller's monotonic clock.
    """

    rate: float
    duration: float
    total: int = field(init=False)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a positive number")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError("duration must be a positive number")
        n = math.ceil(self.duration * self.rate)
        while n > 0 and self.send_at(n - 1) >= self.duration:
            n -= 1
        while self.send_at(n) < self.duration:
            n += 1
        object.__setattr__(self, "total", n)

    def send_at(self, index: int) -> float:
        """Seconds from the start at which request ``index`` is due."""
        return index / self.rate

    def due(self, elapsed: float) -> int:
        """How many requests are due by ``elapsed`` seconds (never more than ``total``)."""
        if elapsed < 0:
            return 0
        n = min(math.floor(elapsed * self.rate) + 1, self.total)
        # floor() of a float product can be one off either way; settle it on send_at.
        while n > 0 and self.send_at(n - 1) > elapsed:
            n -= 1
        while n < self.total and self.send_at(n) <= elapsed:
            n += 1
        return n
