import random
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from cellwork.balancing.policy import PowerOfTwoChoices, RoundRobin, make_policy
from cellwork.balancing.stats import EjectionPolicy, EndpointStats


@dataclass
class Candidate:
    name: str
    stats: EndpointStats


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


def test_p2c_picks_the_cheaper_of_two():
    cheap = Candidate("cheap", EndpointStats(initial_latency=0.001))
    dear = Candidate("dear", EndpointStats(initial_latency=0.050))
    policy = PowerOfTwoChoices(random.Random(1))
    assert all(policy.choose([cheap, dear], 0.0) is cheap for _ in range(100))


def test_p2c_never_picks_the_costliest_of_three():
    candidates = [
        Candidate(str(i), EndpointStats(initial_latency=0.001 * (i + 1))) for i in range(3)
    ]
    policy = PowerOfTwoChoices(random.Random(7))
    picks = [policy.choose(candidates, 0.0).name for _ in range(3000)]
    assert picks.count("2") == 0
    assert picks.count("0") > picks.count("1") > 0


def test_round_robin_is_fair():
    candidates = [Candidate(str(i), EndpointStats()) for i in range(3)]
    policy = make_policy("round_robin")
    assert isinstance(policy, RoundRobin)
    picks = [policy.choose(candidates, 0.0).name for _ in range(300)]
    assert {n: picks.count(n) for n in "012"} == {"0": 100, "1": 100, "2": 100}


def test_unknown_policy_is_refused():
    try:
        make_policy("random-ish")
    except ValueError as exc:
        assert "random-ish" in str(exc)
    else:
        raise AssertionError("expected ValueError")


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
