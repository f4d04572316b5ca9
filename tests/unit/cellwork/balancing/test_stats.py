"""An endpoint's latency estimate, cost and ejection, on a clock passed in."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.balancing.stats import (
    PENALTY_CAP_SECONDS,
    EjectionPolicy,
    EndpointStats,
    may_eject,
)


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
    for _ in range(3):
        stats.begin(0.0)
    assert stats.cost(0.0) == 4 * base


def test_an_endpoint_that_stops_answering_grows_costlier_instead_of_cheaper():
    """The PeakEwma flaw: a frozen endpoint's estimate decays to zero with no answers."""
    frozen = EndpointStats(tau=0.5)
    healthy = EndpointStats(tau=0.5)
    for t in (0.0, 0.01, 0.02):
        frozen.observe(0.002, t)
        healthy.observe(0.002, t)
    frozen.begin(0.03)  # never answers
    frozen.begin(0.5)
    healthy.observe(0.002, 2.0)
    assert frozen.latency(2.0) >= 2.0 - (0.03 + 0.5) / 2  # the mean age of its calls
    assert frozen.cost(2.0) > 100 * healthy.cost(2.0)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=50), st.floats(0, 100))
def test_the_estimate_is_never_below_the_mean_age_of_calls_in_flight(starts, later):
    stats = EndpointStats()
    stats.observe(0.001, 0.0)
    starts = sorted(starts)
    for start in starts:
        stats.begin(start)
    now = starts[-1] + later
    assert stats.latency(now) >= now - sum(starts) / len(starts) - 1e-6


def test_calls_that_end_leave_no_trace_in_the_sum_of_start_times():
    stats = EndpointStats()
    for start in (1e6 + 0.1, 1e6 + 0.2):
        stats.begin(start)
    stats.end(1e6 + 0.1)
    stats.end(1e6 + 0.2)
    assert (stats.in_flight, stats.started_sum, stats.calls) == (0, 0.0, 2)


def test_five_failed_answers_in_a_row_ask_for_an_ejection_and_any_other_answer_resets():
    policy = EjectionPolicy()
    stats = EndpointStats()
    assert [stats.record_failure(policy, refused=False) for _ in range(4)] == [False] * 4
    stats.record_success(0.0, policy)
    assert [stats.record_failure(policy, refused=False) for _ in range(5)] == [False] * 4 + [True]


def test_one_refused_connection_asks_for_an_ejection():
    assert EndpointStats().record_failure(EjectionPolicy(), refused=True)


def test_ejections_last_base_times_their_count_capped_plus_at_most_the_jitter():
    policy = EjectionPolicy(base_seconds=30, max_seconds=300, jitter=0.1)
    stats = EndpointStats()
    lengths = [stats.eject(t, policy, draw=0.0) for t in (0.0, 100.0, 200.0)]
    assert lengths == [30.0, 60.0, 90.0]
    assert stats.is_ejected(229.0) and not stats.is_ejected(290.0)
    for t in range(7):
        stats.eject(1000.0 * t, policy, draw=0.0)
    assert stats.eject(9000.0, policy, draw=0.0) == 300.0
    assert stats.eject(10_000.0, policy, draw=0.999) <= 330.0


def test_the_ejection_multiplier_is_forgiven_after_a_base_period_of_good_answers():
    policy = EjectionPolicy(base_seconds=30)
    stats = EndpointStats()
    stats.eject(0.0, policy, draw=0.0)  # until 30
    stats.record_success(40.0, policy)
    assert stats.ejections == 1  # back for only 10 s
    stats.record_success(61.0, policy)
    assert stats.ejections == 0


@given(st.integers(1, 10_000), st.floats(0.01, 10), st.floats(10, 600), st.floats(0, 0.999))
def test_an_ejection_never_lasts_past_the_cap_plus_its_jitter(n, base, cap, draw):
    policy = EjectionPolicy(base_seconds=base, max_seconds=cap, jitter=0.1)
    assert base <= policy.duration(n, draw) <= cap * 1.1
    assert policy.duration(n + 1, draw) >= policy.duration(n, draw)


@given(st.integers(0, 50), st.integers(0, 50), st.floats(0, 1))
def test_never_more_than_the_max_fraction_of_endpoints_ejected(ejected, serving, fraction):
    policy = EjectionPolicy(max_ejected_fraction=fraction)
    if may_eject(ejected, serving, policy):
        assert ejected + 1 <= fraction * serving


def test_at_most_half_of_the_endpoints_and_never_the_only_one():
    policy = EjectionPolicy()
    assert not may_eject(0, 1, policy)
    assert may_eject(0, 2, policy) and not may_eject(1, 2, policy)
    assert may_eject(1, 4, policy) and not may_eject(2, 4, policy)


# -- failures and sheds as penalties ------------------------------------------------------


def test_fast_failed_answers_make_an_endpoint_costlier_than_a_slower_healthy_one():
    """A 0.2 ms INTERNAL must not make the failing endpoint the cheapest for p2c."""
    healthy, failing = EndpointStats(), EndpointStats()
    for t in (0.0, 0.01, 0.02):
        healthy.observe(0.005, t)
        failing.observe(0.005, t)
    for n, t in enumerate((0.03, 0.04, 0.05), start=1):
        healthy.observe(0.005, t)
        failing.penalize(0.0002, t, factor=2.0**n)
    assert failing.cost(0.05) > 2 * healthy.cost(0.05)


def test_a_shed_doubles_the_estimate_rather_than_folding_its_speed_in():
    stats = EndpointStats()
    stats.observe(0.004, 0.0)
    stats.observe(0.004, 0.0)
    before = stats.latency(0.0)
    stats.penalize(0.0001, 0.0)
    assert stats.latency(0.0) == pytest.approx(2 * before)


def test_a_penalty_is_capped_so_the_endpoint_is_probed_again_once_it_decays():
    stats = EndpointStats(tau=0.5)
    for _ in range(2000):  # no answer in between: the doubling would overflow
        stats.penalize(0.0002, 0.0, factor=1024.0)
    assert stats.latency(0.0) == PENALTY_CAP_SECONDS
    assert stats.latency(10.0) < 0.001


histories = st.lists(
    st.tuples(st.sampled_from(["answer", "penalty", "begin"]), st.floats(0, 30)),
    max_size=30,
)


@given(histories, st.floats(0, 60), st.floats(1, 1024), st.floats(0, 1))
def test_a_failure_or_a_shed_never_lowers_the_estimate(history, seconds, factor, later):
    stats = EndpointStats()
    now = 0.0
    for what, value in history:
        now += later
        if what == "answer":
            stats.observe(value, now)
        elif what == "penalty":
            stats.penalize(value, now, factor=factor)
        else:
            stats.begin(now)
    before = stats.latency(now)
    stats.penalize(seconds, now, factor=factor)
    assert stats.latency(now) >= max(before, seconds)
