"""backoff: capped exponential ceilings, every wait drawn inside them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.resilience import backoff, backoff_ceiling


def test_ceiling_doubles_from_the_base_until_the_cap():
    assert [backoff_ceiling(n, base=0.5, cap=3.0) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


def test_attempts_below_one_wait_at_most_the_base():
    assert backoff_ceiling(0, base=0.2, cap=5) == 0.2
    assert backoff_ceiling(-3, base=0.2, cap=5) == 0.2


def test_a_huge_attempt_number_stays_at_the_cap():
    assert backoff_ceiling(10_000, base=0.1, cap=30.0) == 30.0


def test_full_jitter_scales_the_draw_to_the_ceiling():
    assert backoff(3, base=1.0, cap=10.0, rng=lambda: 0.0) == 0.0
    assert backoff(3, base=1.0, cap=10.0, rng=lambda: 0.5) == 2.0


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_bounds_are_refused(base, cap):
    with pytest.raises(ValueError):
        backoff_ceiling(1, base=base, cap=cap)


@given(
    attempt=st.integers(min_value=-5, max_value=200),
    base=st.floats(min_value=0.0, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_every_wait_lies_between_zero_and_the_capped_ceiling(attempt, base, extra, draw):
    cap = base + extra
    wait = backoff(attempt, base=base, cap=cap, rng=lambda: draw)
    assert 0.0 <= wait <= backoff_ceiling(attempt, base=base, cap=cap) <= cap


@given(attempt=st.integers(min_value=1, max_value=100))
def test_ceilings_never_shrink_as_attempts_grow(attempt):
    assert backoff_ceiling(attempt, base=0.1, cap=7.0) <= backoff_ceiling(
        attempt + 1, base=0.1, cap=7.0
    )
