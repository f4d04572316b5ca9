"""Back-off between retries: exponential growth, capped, with full jitter. Pure logic.

Every retry loop in cellwork waits ``backoff(attempt, base=..., cap=...)``: the
publisher's retried publishes, a consumer's redeliveries, the supervisor's restarts,
an application's reloads. Full jitter (a uniform draw between zero and the capped
exponential, as in AWS's "Exponential Backoff and Jitter") spreads the retries of
many clients that failed together, so they do not come back in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The longest wait before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``,
    at most ``cap``. Raises ValueError for a negative base or a cap below the base."""
    if base < 0 or cap < base:
        raise ValueError("backoff needs 0 <= base <= cap")
    exponent = min(max(attempt - 1, 0), 60)
    return min(base * 2.0**exponent, cap)


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): uniform in
    ``[0, backoff_ceiling(attempt)]``. ``rng`` returns a float in ``[0, 1)``."""
    return rng() * backoff_ceiling(attempt, base=base, cap=cap)
