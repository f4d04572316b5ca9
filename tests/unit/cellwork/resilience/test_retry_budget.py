"""The retry budget: retries never exceed their share of requests, on a clock passed in."""

from hypothesis import given
from hypothesis import strategies as st

from cellwork.resilience.retry_budget import RetryBudget


@given(
    st.lists(st.tuples(st.sampled_from(["request", "retry"]), st.floats(0, 5)), max_size=300),
    st.floats(0, 1),
    st.floats(0, 20),
)
def test_retries_never_exceed_the_budget(ops, ratio, per_second):
    budget = RetryBudget(ratio=ratio, min_per_second=per_second, capacity=50, now=0.0)
    initial = budget.tokens
    now, requests, granted = 0.0, 0, 0
    for op, step in ops:
        now += step
        if op == "request":
            budget.record_request(now)
            requests += 1
        elif budget.try_acquire(now):
            granted += 1
    assert granted <= initial + ratio * requests + per_second * now + 1e-6
    assert budget.tokens <= 50


def test_a_burst_of_failures_gets_only_a_fraction_retried():
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, capacity=100, now=0.0)
    granted = 0
    for _ in range(1000):
        budget.record_request(0.0)
        granted += budget.try_acquire(0.0)
    assert 95 <= granted <= 101


def test_bad_parameters_are_refused():
    for kwargs in ({"ratio": -1}, {"min_per_second": -1}, {"capacity": 0}):
        try:
            RetryBudget(**kwargs)
        except ValueError:
            continue
        raise AssertionError(kwargs)


def test_new_rates_keep_the_tokens_saved():
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, capacity=100, now=0.0)
    for _ in range(10):
        budget.record_request(0.0)
    saved = budget.tokens
    budget.reconfigure(ratio=0.1, min_per_second=0.0)
    assert budget.tokens == saved
    budget.record_request(0.0)
    assert budget.tokens == saved + 0.1
