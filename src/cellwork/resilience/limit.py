"""A bulkhead: at most so many calls in flight to one downstream service. Pure state.

One slow dependency must not take every coroutine, socket and byte of memory of its
caller: past ``limit`` calls in flight, one more is refused at once (the client
raises ``Overloaded`` without an attempt) instead of queueing behind the others.
The limit is a ceiling for a runaway, not a tuning knob (the default 1000 is far
above what a healthy downstream has in flight); servers shed by their own adaptive
limits. Event-loop code only: no lock, as every call of a client runs on one loop.
"""

from __future__ import annotations


class ConcurrencyLimit:
    """Counts calls in flight against ``limit``."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        """Take a slot; False when ``limit`` calls are in flight already."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        """Give back the slot of a call that ended."""
        self.in_flight -= 1
