"""loadgen's arithmetic: the mix, the open-loop schedule, percentiles, feed.ready timing."""

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.loadgen.stats import (
    DEFAULT_MIX,
    INTERACTION_KINDS,
    ROUTES,
    Mix,
    Pacer,
    RateWindow,
    ReadyTracker,
    RouteStats,
    RunStats,
    Samples,
    parse_mix,
    percentile,
)

weights = st.lists(st.integers(0, 50), min_size=1, max_size=3).filter(lambda w: sum(w) > 0)


def test_the_default_mix_parses_to_its_three_routes():
    mix = parse_mix(DEFAULT_MIX)
    assert mix.as_dict() == {"feed": 70, "home": 20, "interaction": 10}
    assert mix.share("feed") == pytest.approx(0.7)
    assert parse_mix(" feed = 1 , home=0 ").routes() == ("feed",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("feed=1,search=2", "unknown route 'search'"),
        ("feed=1,feed=2", "twice"),
        ("feed=x", "must be an integer"),
        ("feed=-1,home=3", "must not be negative"),
        ("feed=0,home=0", "positive weight"),
        ("", "positive weight"),
        ("feed", "not ROUTE=WEIGHT"),
    ],
)
def test_a_bad_mix_is_refused_with_a_readable_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


@given(weights, st.floats(-1, 2))
def test_pick_only_returns_routes_with_a_positive_weight(ws, u):
    mix = Mix(tuple(zip(ROUTES, ws, strict=False)))
    assert mix.pick(u) in mix.routes()


@given(weights, st.integers(1, 20))
def test_pick_gives_each_route_exactly_its_share_of_a_uniform_grid(ws, per_unit):
    mix = Mix(tuple(zip(ROUTES, ws, strict=False)))
    n = mix.total * per_unit
    picks = [mix.pick((i + 0.5) / n) for i in range(n)]
    for route, weight in mix.weights:
        assert picks.count(route) == weight * per_unit


def test_interaction_kinds_are_the_contracts_three():
    assert set(INTERACTION_KINDS.routes()) == {"view", "like", "complete"}


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


def test_a_frame_after_a_read_is_timed_from_the_reads_answer():
    ready = ReadyTracker()
    ready.read_answered("u1", answered_at=10.0, version=3)
    assert ready.ready("u1", at=10.25, version=4) == pytest.approx(0.25)
    assert ready.ready("u1", at=11.0, version=5) is None  # no read outstanding any more
    assert (ready.frames, ready.untimed, len(ready.latencies)) == (2, 1, 1)


def test_a_frame_not_newer_than_what_the_read_saw_is_not_its_answer():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=7)
    assert ready.ready("u1", 1.1, version=7) is None
    assert ready.ready("u2", 1.2, version=9) is None  # another user's frame
    assert ready.ready("u1", 1.5, version=8) == pytest.approx(0.5)


def test_the_latest_read_restarts_the_clock():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=1)
    ready.read_answered("u1", 4.0, version=1)  # coalesced into one refresh: the wait is from here
    assert ready.ready("u1", 4.1, version=2) == pytest.approx(0.1)


def test_a_read_answered_after_its_fresh_version_was_announced_waits_for_nothing():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=1)
    assert ready.ready("u1", 1.2, version=2) is not None
    ready.read_answered("u1", 1.3, version=1)  # a slow answer: version 2 is already out
    assert ready.outstanding == 0
    assert ready.ready("u1", 12.0, version=3) is None


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.floats(0, 5), st.integers(0, 5)),
        max_size=60,
    )
)
def test_every_frame_is_timed_or_untimed_and_no_latency_is_negative(events):
    ready = ReadyTracker()
    now = 0.0
    for is_read, user, step, version in events:
        now += step
        if is_read:
            ready.read_answered(user, now, version)
        else:
            ready.ready(user, now, version)
    assert ready.frames == ready.untimed + len(ready.latencies)
    assert all(latency >= 0 for latency in ready.latencies)


def test_the_summary_is_json_in_milliseconds_with_errors_merged_by_status():
    stats = RunStats(planned=10, sent=9, dropped=1)
    stats.routes["feed"].record(0.010)
    stats.routes["feed"].record(0.030, "503")
    stats.routes["interaction"].record(0.020, "429")
    stats.routes["interaction"].record(0.015, "503")
    stats.ready.read_answered("u", 1.0, 1)
    stats.ready.ready("u", 1.05, 2)
    config = {"mix": {"feed": 1, "interaction": 1}}
    summary = stats.summary(elapsed=2.0, config=config)
    json.dumps(summary, allow_nan=False)  # no NaN leaks out: empty percentiles are null
    assert set(summary["routes"]) == {"feed", "interaction"}  # home: not in the mix, no requests
    feed = summary["routes"]["feed"]
    assert (feed["count"], feed["ok"], feed["rps"]) == (2, 1, 1.0)
    assert (feed["p50_ms"], feed["p99_ms"], feed["errors"]) == (10.0, 30.0, {"503": 1})
    assert summary["errors_by_status"] == {"429": 1, "503": 2}
    assert summary["requests"] | {"send_lag_p99_ms": 0} == {
        "planned": 10, "sent": 9, "completed": 4, "ok": 1, "errors": 3, "dropped": 1,
        "rps": 2.0, "send_lag_p99_ms": 0,
    }  # fmt: skip
    assert summary["requests"]["send_lag_p99_ms"] is None
    assert summary["feed_ready"]["count"] == 1
    assert summary["feed_ready"]["p50_ms"] == pytest.approx(50.0)
    assert "feed.ready" in summary["feed_ready"]["definition"]
