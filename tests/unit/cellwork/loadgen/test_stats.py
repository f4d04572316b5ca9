"""The engine's arithmetic: the open-loop schedule, percentiles, counters, the summary."""

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.loadgen.pacing import Pacer
from cellwork.loadgen.stats import (
    RateWindow,
    RouteStats,
    RunStats,
    Samples,
    client_fell_behind,
    percentile,
)


@given(st.floats(0.1, 2000), st.floats(0.01, 60))
def test_the_schedule_fits_every_send_before_the_end_and_no_more(rate, duration):
    pacer = Pacer(rate, duration)
    assert pacer.total >= 1
    assert pacer.send_at(pacer.total - 1) < duration <= pacer.send_at(pacer.total)
    assert abs(pacer.total - rate * duration) <= 1


@given(st.floats(0.1, 2000), st.floats(0.01, 60), st.lists(st.floats(-1, 70), max_size=30))
def test_due_counts_the_send_times_already_reached(rate, duration, times):
    pacer = Pacer(rate, duration)
    previous = 0
    for elapsed in sorted(times):
        due = pacer.due(elapsed)
        assert previous <= due <= pacer.total  # never goes back, never past the plan
        assert due == 0 or pacer.send_at(due - 1) <= elapsed
        assert due == pacer.total or pacer.send_at(due) > elapsed
        previous = due


def test_the_schedule_is_open_loop_a_late_caller_finds_everything_due():
    pacer = Pacer(rate=10, duration=2)
    assert pacer.total == 20
    assert pacer.due(0) == 1
    assert pacer.due(0.55) == 6
    assert pacer.due(100) == 20  # a stalled loop sees all of it due at once: it drops, not waits


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (-1, 1), (1, 0), (math.inf, 1)])
def test_a_schedule_needs_a_positive_rate_and_duration(rate, duration):
    with pytest.raises(ValueError):
        Pacer(rate, duration)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_the_nearest_rank(values, q):
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    wanted = Fraction(q) * len(ordered) / 100  # how many values must lie at or below
    assert sum(v <= p for v in ordered) >= wanted
    assert sum(v < p for v in ordered) < max(wanted, 1)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=100), st.floats(0, 100), st.floats(0, 100))
def test_percentile_grows_with_q(values, q1, q2):
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert percentile(ordered, low) <= percentile(ordered, high)
    assert percentile(ordered, 0) == ordered[0] and percentile(ordered, 100) == ordered[-1]


def test_percentile_ranks_exactly_where_float_arithmetic_would_round_up():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 7) == 7.0  # 7 / 100 * 100 is 7.000000000000001 in floats
    assert percentile(values, 99) == 99.0


def test_percentile_of_nothing_is_nan_and_q_must_be_a_percentage():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_samples_sort_again_after_a_new_value():
    samples = Samples([3.0, 1.0, 2.0])
    assert samples.percentile(50) == 2.0
    samples.add(0.5)
    samples.add(0.25)
    assert samples.percentile(50) == 1.0
    assert samples.max() == 3.0 and len(samples) == 5


def test_route_stats_count_successes_and_errors_by_status():
    route = RouteStats()
    route.record(0.01)
    route.record(0.5, "503")
    route.record(5.0, "timeout")
    route.record(0.2, "503")
    assert (route.count, route.ok) == (4, 1)
    assert route.errors == {"503": 2, "timeout": 1}


def test_the_rate_window_measures_the_last_seconds_only():
    window = RateWindow(span=2.0)
    assert window.rate() == 0.0
    for tick in range(41):  # 100 a second for 4 s, sampled every 0.1 s
        window.observe(tick * 0.1, tick * 10)
    assert window.rate() == pytest.approx(100)
    for tick in range(41, 81):  # then nothing for 4 s
        window.observe(tick * 0.1, 400)
    assert window.rate() == 0.0


def test_routes_are_counted_under_any_name_in_order_of_first_answer():
    stats = RunStats()
    stats.route("POST /orders").record(0.01)
    stats.route("GET /orders").record(0.02, "404")
    stats.route("POST /orders").record(0.03)
    assert list(stats.routes) == ["POST /orders", "GET /orders"]
    assert (stats.completed, stats.ok, stats.errors) == (3, 2, 1)


def test_the_summary_is_json_in_milliseconds_with_errors_merged_by_status():
    stats = RunStats(planned=10, sent=9, dropped=1)
    stats.route("feed").record(0.010)
    stats.route("feed").record(0.030, "503")
    stats.route("interaction").record(0.020, "429")
    stats.route("interaction").record(0.015, "503")
    summary = stats.summary(elapsed=2.0, config={"scenario": "x"})
    json.dumps(summary, allow_nan=False)  # no NaN leaks out: empty percentiles are null
    assert summary["config"] == {"scenario": "x"}
    assert set(summary["routes"]) == {"feed", "interaction"}
    feed = summary["routes"]["feed"]
    assert (feed["count"], feed["ok"], feed["rps"]) == (2, 1, 1.0)
    assert (feed["p50_ms"], feed["p99_ms"], feed["errors"]) == (10.0, 30.0, {"503": 1})
    assert summary["errors_by_status"] == {"429": 1, "503": 2}
    assert summary["requests"] == {
        "planned": 10, "sent": 9, "completed": 4, "ok": 1, "errors": 3, "dropped": 1, "rps": 2.0,
    }  # fmt: skip
    assert summary["client"]["send_lag_p99_ms"] is None  # nothing sent through the engine here
    assert summary["conclusive"] is True


def test_a_run_whose_client_sent_late_is_marked_inconclusive():
    stats = RunStats(planned=100, sent=100)
    for index in range(100):
        stats.send_lag.add(0.001 if index < 95 else 0.2)  # the last few left 200 ms late
    summary = stats.summary(elapsed=1.0, config={}, max_send_lag=0.01)
    assert summary["conclusive"] is False
    assert summary["client"]["fell_behind"] is True
    assert summary["client"]["send_lag_p99_ms"] == 200.0
    assert summary["client"]["max_send_lag_ms"] == 10.0


def test_a_client_on_schedule_is_conclusive_even_with_a_rare_late_send():
    stats = RunStats(planned=1000, sent=1000)
    for index in range(1000):
        stats.send_lag.add(0.5 if index == 0 else 0.002)  # one hiccup in a thousand
    assert stats.summary(elapsed=1.0, config={}, max_send_lag=0.01)["conclusive"] is True


@given(st.lists(st.floats(0, 1), max_size=50), st.floats(0.001, 1))
def test_the_client_fell_behind_exactly_when_its_p99_send_lag_passes_the_limit(lags, limit):
    samples = Samples(lags)
    behind = client_fell_behind(samples, limit)
    assert behind == (bool(lags) and percentile(sorted(lags), 99) > limit)
