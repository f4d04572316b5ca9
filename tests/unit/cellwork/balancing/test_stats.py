"""An endpoint's latency estimate, cost and ejection back-off, on a clock passed in."""

from hypothesis import given
from hypothesis import strategies as st

from cellwork.balancing.stats import EjectionPolicy, EndpointStats


def test_slower_answers_raise_the_estimate_at_once():
    stats = EndpointStats()
    stats.observe(0.001, now=0.0)
    stats.observe(0.001, now=0.01)
    stats.observe(0.020, now=0.02)
    assert stats.latency(0.02) == 0.020


def test_estimate_decays_towards_zero_while_unobserved_so_slow_endpoints_get_probed():
    stats = EndpointStats(tau=0.5)
    stats.observe(0.020, now=0.0)
    stats.observe(0.020, now=0.0)
    assert stats.latency(1.0) < 0.020 * 0.2


def test_cost_grows_with_in_flight_calls():
    stats = EndpointStats(initial_latency=0.002)
    base = stats.cost(0.0)
    stats.in_flight = 3
    assert stats.cost(0.0) == 4 * base


def test_endpoint_is_ejected_after_n_consecutive_failures_only():
    policy = EjectionPolicy(consecutive_failures=3, base_seconds=1.0)
    stats = EndpointStats()
    assert not stats.record_failure(0.0, policy)
    assert not stats.record_failure(0.0, policy)
    stats.record_success()
    assert not stats.record_failure(0.0, policy)
    assert not stats.record_failure(0.0, policy)
    assert stats.record_failure(10.0, policy)
    assert stats.is_ejected(10.5) and not stats.is_ejected(11.0)


def test_repeated_ejections_double_the_backoff_until_success():
    policy = EjectionPolicy(consecutive_failures=1, base_seconds=1.0, max_seconds=30.0)
    stats = EndpointStats()
    lengths = []
    for t in (0.0, 100.0, 200.0):
        stats.record_failure(t, policy)
        lengths.append(stats.ejected_until - t)
    assert lengths == [1.0, 2.0, 4.0]
    stats.record_success()
    stats.record_failure(300.0, policy)
    assert stats.ejected_until - 300.0 == 1.0


@given(st.integers(min_value=0, max_value=10_000), st.floats(0.01, 10), st.floats(10, 600))
def test_backoff_is_monotonic_and_capped(n, base, cap):
    policy = EjectionPolicy(base_seconds=base, max_seconds=cap)
    assert policy.backoff(n) <= cap
    assert policy.backoff(n + 1) >= policy.backoff(n)
