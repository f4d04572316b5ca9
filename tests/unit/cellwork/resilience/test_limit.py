"""The concurrency limit: never more in flight than the limit, slots come back."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.resilience.limit import ConcurrencyLimit


@given(st.integers(1, 20), st.lists(st.booleans(), max_size=200))
def test_never_more_in_flight_than_the_limit(limit, ops):
    bulkhead = ConcurrencyLimit(limit)
    held = 0
    for acquire in ops:
        if acquire:
            if bulkhead.try_acquire():
                held += 1
            else:
                assert held == limit
        elif held:
            bulkhead.release()
            held -= 1
        assert bulkhead.in_flight == held <= limit


def test_a_released_slot_is_taken_again_and_the_limit_can_change_live():
    bulkhead = ConcurrencyLimit(1)
    assert bulkhead.try_acquire() and not bulkhead.try_acquire()
    bulkhead.limit = 2
    assert bulkhead.try_acquire()
    bulkhead.release()
    bulkhead.release()
    assert bulkhead.in_flight == 0


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        ConcurrencyLimit(0)
