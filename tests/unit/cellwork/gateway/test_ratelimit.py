"""Token buckets: burst then rate, never more than burst + rate x time, bounded keys."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.gateway import TokenBucketLimiter


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    limiter = TokenBucketLimiter(rate=10, burst=5)
    assert [limiter.try_acquire("u", now=0.0) for _ in range(5)] == [0.0] * 5
    wait = limiter.try_acquire("u", now=0.0)
    assert wait == pytest.approx(0.1)
    assert limiter.try_acquire("u", now=0.1) == 0.0
    assert limiter.try_acquire("other", now=0.1) == 0.0  # keys are independent


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_a_bucket_never_allows_more_than_burst_plus_rate_times_time(gaps: list[float]) -> None:
    limiter = TokenBucketLimiter(rate=4, burst=3)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += limiter.try_acquire("u", now=now) == 0.0
    assert allowed <= 3 + 4 * now + 1e-9


def test_the_limiter_forgets_the_least_recently_used_keys() -> None:
    limiter = TokenBucketLimiter(rate=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.try_acquire(key, now=0.0)
    assert limiter.try_acquire("a", now=0.0) == 0.0  # forgotten: a full bucket again
    assert limiter.try_acquire("c", now=0.0) > 0.0
