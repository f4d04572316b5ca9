"""The adaptive concurrency limit on a clock passed in: it stays within its bounds, grows to
what a steady load needs, shrinks when latency rises, and its limiter never admits past it."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellwork.resilience.adaptive import AdaptiveLimit, ConcurrencyLimiter, LimitSettings


def run_windows(limit: AdaptiveLimit, windows: int, rtt: float, demand: int, now: float) -> float:
    """Feed ``windows`` windows of calls that take ``rtt`` s while the load keeps
    ``demand`` calls in flight (as many as the limit lets in); returns the clock after."""
    per_window = limit.settings.min_samples
    for _ in range(windows):
        in_flight = max(1, min(demand, limit.limit))
        for _ in range(per_window):
            limit.sample(rtt, in_flight, now)
        # A window ends at most max_window after it starts: this closes exactly one.
        now += limit.settings.max_window
        limit.sample(rtt, in_flight, now)
    return now


limit_settings = st.builds(
    lambda lo, span, start, smoothing, tolerance: LimitSettings(
        initial=lo + int(span * start),
        min_limit=lo,
        max_limit=lo + span,
        smoothing=smoothing,
        tolerance=tolerance,
        long_window=50,
        min_samples=3,
    ),
    st.integers(1, 50),
    st.integers(0, 500),
    st.floats(0, 1),
    st.floats(0.05, 1),
    st.floats(1, 3),
)


@given(
    limit_settings,
    st.lists(
        st.tuples(st.floats(0, 10), st.integers(0, 5000), st.floats(0, 2)),
        max_size=400,
    ),
)
def test_the_limit_stays_within_its_bounds_whatever_the_samples(given_settings, samples):
    limit = AdaptiveLimit(given_settings, now=0.0)
    now = 0.0
    for rtt, in_flight, step in samples:
        now += step
        limit.sample(rtt, in_flight, now)
        assert given_settings.min_limit <= limit.limit <= given_settings.max_limit


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-4, 1.0), st.integers(1, 400), st.integers(1, 100))
def test_at_steady_latency_the_limit_grows_to_what_the_load_needs_and_no_further(
    rtt, demand, initial
):
    s = LimitSettings(initial=initial, min_limit=1, max_limit=1000)
    limit = AdaptiveLimit(s, now=0.0)
    run_windows(limit, 400, rtt, demand, 0.0)
    assert limit.limit >= demand  # every call the load brings is admitted
    # It grows only while the load fills half of it: to about twice the demand.
    assert limit.limit <= max(initial, 2 * demand + math.sqrt(2 * demand) + 1)


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-4, 0.5), st.floats(4, 20), st.integers(1, 60), st.integers(8, 40))
def test_rising_latency_shrinks_the_limit_window_after_window(rtt, slower, windows, floor):
    s = LimitSettings(initial=100, min_limit=floor, max_limit=1000)
    limit = AdaptiveLimit(s, now=0.0)
    now = run_windows(limit, 50, rtt, 10_000, 0.0)  # saturated, latency steady
    before = limit.limit
    previous = before
    for _ in range(windows):
        now = run_windows(limit, 1, rtt * slower, 10_000, now)
        assert limit.limit <= previous
        previous = limit.limit
    assert limit.limit < before or limit.limit == floor
    assert limit.limit >= floor


def test_work_queueing_behind_itself_takes_the_limit_down_and_recovery_lifts_it():
    limit = AdaptiveLimit(LimitSettings(initial=100, min_limit=10, max_limit=1000), now=0.0)
    now = run_windows(limit, 30, 0.002, 10_000, 0.0)
    grown = limit.limit
    assert grown > 100
    # Latency proportional to what is admitted: the work queues behind itself (one
    # call at a time, 0.5 ms each), four times the quiet latency at the grown limit.
    for _ in range(40):
        now = run_windows(limit, 1, 0.0005 * limit.limit, 10_000, now)
    assert limit.limit <= grown / 6
    now = run_windows(limit, 60, 0.002, 10_000, now)
    assert limit.limit > 100


def test_a_load_that_uses_under_half_the_limit_leaves_it_alone():
    limit = AdaptiveLimit(LimitSettings(initial=100, min_limit=10), now=0.0)
    run_windows(limit, 50, 0.001, 20, 0.0)
    assert limit.limit == 100
    run_windows(limit, 50, 0.5, 20, 100.0)  # slow, but not because of the limit
    assert limit.limit == 100


def test_a_window_with_too_few_calls_changes_nothing():
    limit = AdaptiveLimit(LimitSettings(initial=50, min_limit=10, min_samples=10), now=0.0)
    now = 0.0
    for _ in range(100):
        for _ in range(8):
            limit.sample(0.001, 50, now)
        now += 1.0
        limit.sample(0.001, 50, now)  # 9 calls in the window: dropped
    assert limit.limit == 50
    assert limit.short_rtt == 0.0


def test_the_window_lasts_twice_its_fastest_call_within_bounds():
    limit = AdaptiveLimit(LimitSettings(initial=20, min_samples=1, max_window=1.0), now=0.0)
    limit.sample(0.3, 20, 0.1)  # closes the first window (0.1 s): the next lasts 0.6 s
    limit.sample(0.3, 20, 0.65)
    assert limit.short_rtt == 0.3  # the first window only
    limit.sample(0.1, 20, 0.71)
    assert limit.short_rtt == pytest.approx(0.2)  # closed at 0.7: both its calls


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_limit": 0},
        {"initial": 5, "min_limit": 10},
        {"initial": 50, "max_limit": 40},
        {"smoothing": 0.0},
        {"smoothing": 1.5},
        {"tolerance": 0.9},
        {"long_window": 0},
        {"min_window": 0.0},
        {"min_window": 2.0, "max_window": 1.0},
        {"min_samples": 0},
    ],
)
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        LimitSettings(**kwargs)


@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.floats(0, 0.5)), max_size=500),
    st.integers(1, 30),
)
def test_the_limiter_admits_exactly_while_in_flight_is_under_the_limit(ops, floor):
    limiter = ConcurrencyLimiter(
        LimitSettings(initial=floor, min_limit=floor, max_limit=60, min_samples=2), now=0.0
    )
    now, held, refused = 0.0, 0, 0
    for acquire, rtt, step in ops:
        now += step
        if acquire or held == 0:
            under = limiter.in_flight < limiter.limit
            admitted = limiter.try_acquire()
            assert admitted == under
            held += admitted
            refused += not admitted
        else:
            limiter.release(rtt, now)
            held -= 1
        assert limiter.in_flight == held <= 60
    assert limiter.shed == refused


def test_a_full_limiter_refuses_until_a_slot_is_released():
    limiter = ConcurrencyLimiter(LimitSettings(initial=2, min_limit=2, max_limit=2), now=0.0)
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.release(0.01, 0.01)
    assert limiter.try_acquire()
    assert (limiter.in_flight, limiter.shed, limiter.limit) == (2, 1, 2)


def run_free_windows(
    limit: AdaptiveLimit, windows: int, rtt: float, demand: int, now: float
) -> float:
    """As ``run_windows``, with every call finding the resource free (``busy=False``)."""
    per_window = limit.settings.min_samples
    for _ in range(windows):
        in_flight = max(1, min(demand, limit.limit))
        for _ in range(per_window):
            limit.sample(rtt, in_flight, now, busy=False)
        now += limit.settings.max_window
        limit.sample(rtt, in_flight, now, busy=False)
    return now


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-4, 0.05), st.floats(2, 200), st.integers(1, 400), st.integers(1, 60))
def test_latency_rising_while_the_resource_is_free_never_shrinks_the_limit(
    rtt, slower, demand, windows
):
    limit = AdaptiveLimit(LimitSettings(initial=100, min_limit=20, max_limit=1000), now=0.0)
    now = run_windows(limit, 30, rtt, demand, 0.0)  # the usual latency learnt
    previous = limit.limit
    for _ in range(windows):  # a dependency slows down: the loop stays free
        now = run_free_windows(limit, 1, rtt * slower, demand, now)
        assert limit.limit >= previous
        previous = limit.limit


def test_a_slow_dependency_at_200_calls_a_second_is_not_shed():
    # 5 ms, then 300 ms, at 200 calls/s: 60 calls in flight. With every latency rise
    # read as queueing, the limit fell from 100 to its floor of 20.
    limiter = ConcurrencyLimiter(LimitSettings(), now=0.0)
    now, shed = 0.0, 0
    for rtt, seconds in ((0.005, 5.0), (0.3, 20.0)):
        held: list[float] = []  # when each admitted call ends
        for _ in range(int(200 * seconds)):
            now += 1 / 200
            while held and held[0] <= now:
                limiter.release(rtt, held.pop(0), busy=False)
            if limiter.try_acquire():
                held.append(now + rtt)
            else:
                shed += 1
        for end in held:
            limiter.release(rtt, end, busy=False)
    assert shed == 0
    assert limiter.limit >= 100


def test_a_full_limit_on_a_free_resource_makes_room_for_twice_its_peak_at_once():
    limit = AdaptiveLimit(LimitSettings(initial=100, min_limit=20, max_limit=1000), now=0.0)
    run_free_windows(limit, 1, 2.0, 10_000, 0.0)  # 2 s calls, 100 in flight: all it let in
    assert limit.limit == 200
    run_free_windows(limit, 3, 2.0, 10_000, 10.0)
    assert limit.limit == 1000  # capped


def test_the_same_rise_on_a_busy_resource_shrinks_the_limit():
    limit = AdaptiveLimit(LimitSettings(initial=100, min_limit=20, max_limit=1000), now=0.0)
    now = run_windows(limit, 30, 0.005, 10_000, 0.0)
    grown = limit.limit
    now = run_windows(limit, 20, 0.3, 10_000, now)  # busy=True: queueing here
    assert limit.limit < grown / 2
