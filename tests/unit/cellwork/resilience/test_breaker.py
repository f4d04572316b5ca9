"""The circuit breaker's state machine, on a clock passed in: thresholds proved here."""

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellwork.resilience.breaker import (
    ADMITTED,
    PROBES_RETRY_AFTER,
    REJECTED,
    BreakerState,
    CircuitBreaker,
    Outcome,
    outcome_of,
)
from cellwork.resilience.policy import BreakerPolicy

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def calls(breaker: CircuitBreaker, now: float, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        ticket = breaker.admit(now)
        assert ticket != REJECTED
        breaker.record(now, outcome, ticket)


def opened(policy: BreakerPolicy | None = None, now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(policy or BreakerPolicy(), now=now)
    calls(breaker, now, [Outcome.FAILURE] * breaker.policy.min_calls)
    assert breaker.state is OPEN
    return breaker


def test_opens_at_half_failed_of_twenty_calls_in_the_window():
    breaker = CircuitBreaker(BreakerPolicy(), now=0.0)
    calls(breaker, 1.0, [Outcome.SUCCESS, Outcome.FAILURE] * 9 + [Outcome.SUCCESS])
    assert breaker.state is CLOSED  # 9 of 19
    calls(breaker, 1.0, [Outcome.FAILURE])
    assert breaker.state is OPEN  # 10 of 20


def test_stays_closed_under_the_ratio():
    breaker = CircuitBreaker(BreakerPolicy(), now=0.0)
    calls(breaker, 1.0, [Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE] * 30)
    assert breaker.state is CLOSED


def test_nineteen_failures_alone_do_not_open_it():
    breaker = CircuitBreaker(BreakerPolicy(), now=0.0)
    calls(breaker, 1.0, [Outcome.FAILURE] * 19)
    assert breaker.state is CLOSED


def test_calls_older_than_the_window_no_longer_count():
    breaker = CircuitBreaker(BreakerPolicy(window_seconds=10), now=0.0)
    calls(breaker, 0.5, [Outcome.FAILURE] * 15)
    calls(breaker, 11.0, [Outcome.FAILURE] * 5)
    assert breaker.state is CLOSED and breaker.window() == (5, 5)


def test_ignored_outcomes_count_for_nothing():
    breaker = CircuitBreaker(BreakerPolicy(min_calls=4), now=0.0)
    calls(breaker, 1.0, [Outcome.IGNORED] * 50 + [Outcome.FAILURE] * 3)
    assert breaker.state is CLOSED and breaker.window() == (3, 3)


def test_open_rejects_until_its_time_is_up_and_says_how_long():
    breaker = opened(BreakerPolicy(open_seconds=5), now=10.0)
    assert breaker.admit(12.0) == REJECTED
    assert breaker.retry_after(12.0) == pytest.approx(3.0)
    assert breaker.state_at(14.9) is OPEN and breaker.state_at(15.0) is HALF_OPEN


def test_half_open_admits_the_probes_only_and_closes_when_all_succeed():
    breaker = opened(BreakerPolicy(half_open_probes=3), now=0.0)
    tickets = [breaker.admit(5.0) for _ in range(4)]
    assert breaker.state is HALF_OPEN
    assert tickets[3] == REJECTED and all(t > ADMITTED for t in tickets[:3])
    for ticket in tickets[:2]:
        breaker.record(5.1, Outcome.SUCCESS, ticket)
    assert breaker.state is HALF_OPEN
    breaker.record(5.1, Outcome.SUCCESS, tickets[2])
    assert breaker.state is CLOSED and breaker.window() == (0, 0)


def test_a_failed_probe_opens_it_again_for_a_full_period():
    breaker = opened(BreakerPolicy(open_seconds=5), now=0.0)
    ticket = breaker.admit(5.0)
    breaker.record(5.2, Outcome.FAILURE, ticket)
    assert breaker.state is OPEN and breaker.admit(10.1) == REJECTED
    assert breaker.admit(10.2) != REJECTED


def test_a_probe_that_tells_nothing_gives_its_slot_to_another():
    breaker = opened(BreakerPolicy(half_open_probes=1), now=0.0)
    ticket = breaker.admit(5.0)
    assert breaker.admit(5.0) == REJECTED
    breaker.record(5.0, Outcome.IGNORED, ticket)
    assert breaker.admit(5.0) != REJECTED


def test_calls_admitted_before_it_opened_change_nothing_when_they_end():
    breaker = CircuitBreaker(BreakerPolicy(min_calls=2, half_open_probes=1), now=0.0)
    slow = breaker.admit(0.0)
    calls(breaker, 0.0, [Outcome.FAILURE, Outcome.FAILURE])
    assert breaker.state is OPEN
    probe = breaker.admit(5.0)
    breaker.record(5.0, Outcome.SUCCESS, slow)  # not a probe: does not close it
    assert breaker.state is HALF_OPEN
    breaker.record(5.0, Outcome.SUCCESS, probe)
    assert breaker.state is CLOSED


def test_a_probe_of_an_earlier_half_open_spell_changes_nothing():
    breaker = opened(BreakerPolicy(half_open_probes=2, open_seconds=5), now=0.0)
    stale, failing = breaker.admit(5.0), breaker.admit(5.0)
    breaker.record(5.0, Outcome.FAILURE, failing)  # open again until 10
    fresh = breaker.admit(10.0)
    breaker.record(10.0, Outcome.SUCCESS, stale)
    breaker.record(10.0, Outcome.SUCCESS, fresh)
    assert breaker.state is HALF_OPEN  # one probe of this spell has succeeded, of two


def test_transitions_are_reported_in_order():
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerPolicy(min_calls=1, half_open_probes=1),
        now=0.0,
        on_transition=lambda old, new: seen.append((old, new)),
    )
    calls(breaker, 0.0, [Outcome.FAILURE])
    ticket = breaker.admit(5.0)
    breaker.record(5.0, Outcome.SUCCESS, ticket)
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_reconfiguring_keeps_the_state_and_the_counts_of_a_window_of_the_same_length():
    breaker = CircuitBreaker(BreakerPolicy(), now=0.0)
    calls(breaker, 1.0, [Outcome.FAILURE] * 10)
    breaker.reconfigure(BreakerPolicy(min_calls=10), now=1.0)
    calls(breaker, 1.0, [Outcome.SUCCESS])
    assert breaker.window() == (11, 10)
    calls(breaker, 1.0, [Outcome.FAILURE])
    assert breaker.state is OPEN
    breaker.reconfigure(BreakerPolicy(window_seconds=30), now=2.0)
    assert breaker.state is OPEN and breaker.window() == (0, 0)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (grpc.StatusCode.OK, Outcome.SUCCESS),
        (grpc.StatusCode.UNAVAILABLE, Outcome.FAILURE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Outcome.FAILURE),
        (grpc.StatusCode.INTERNAL, Outcome.FAILURE),
        (grpc.StatusCode.UNKNOWN, Outcome.FAILURE),
        (grpc.StatusCode.DATA_LOSS, Outcome.FAILURE),
        (grpc.StatusCode.INVALID_ARGUMENT, Outcome.SUCCESS),
        (grpc.StatusCode.NOT_FOUND, Outcome.SUCCESS),
        (grpc.StatusCode.ALREADY_EXISTS, Outcome.SUCCESS),
        (grpc.StatusCode.FAILED_PRECONDITION, Outcome.SUCCESS),
        (grpc.StatusCode.PERMISSION_DENIED, Outcome.SUCCESS),
        (grpc.StatusCode.UNAUTHENTICATED, Outcome.SUCCESS),
        (grpc.StatusCode.UNIMPLEMENTED, Outcome.SUCCESS),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.IGNORED),
        (grpc.StatusCode.CANCELLED, Outcome.IGNORED),
    ],
)
def test_what_each_status_counts_as(code, outcome):
    assert outcome_of(code) is outcome


def test_an_attempt_that_never_reached_a_server_counts_for_nothing():
    assert outcome_of(grpc.StatusCode.UNAVAILABLE, reached=False) is Outcome.IGNORED


# --- properties ------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.floats(0, 3),  # time passing first
        st.sampled_from(list(Outcome)),
        st.booleans(),  # end the call at once, or leave it in flight for later
    ),
    max_size=300,
)
policies = st.builds(
    BreakerPolicy,
    failure_ratio=st.floats(0.05, 1.0),
    min_calls=st.integers(1, 30),
    window_seconds=st.floats(0.5, 20),
    open_seconds=st.floats(0.1, 10),
    half_open_probes=st.integers(1, 4),
)


@settings(max_examples=500)
@given(policies, steps)
def test_it_never_goes_from_open_to_closed_without_a_successful_probe(policy, ops):
    transitions: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(policy, on_transition=lambda old, new: transitions.append((old, new)))
    now, pending, epoch = 0.0, [], 0
    probe_successes = 0  # of the latest half-open spell
    for step, outcome, at_once in ops:
        now += step
        ticket = breaker.admit(now)
        if ticket != REJECTED:
            pending.append((ticket, outcome))
            epoch = max(epoch, ticket)
        if at_once or len(pending) > 5:
            while pending:
                ticket, ended = pending.pop(0)
                seen = len(transitions)
                was_half_open = breaker.state is HALF_OPEN
                breaker.record(now, ended, ticket)
                if was_half_open and ticket == epoch and ended is Outcome.SUCCESS:
                    probe_successes += 1
                for old, new in transitions[seen:]:
                    if new is OPEN:
                        probe_successes = 0
                    if new is CLOSED:
                        assert old is HALF_OPEN
                        assert probe_successes >= policy.half_open_probes >= 1
    assert all(not (old is OPEN and new is CLOSED) for old, new in transitions)


@settings(max_examples=500)
@given(policies, steps)
def test_it_never_opens_with_fewer_than_min_calls_in_the_window(policy, ops):
    counted: list[tuple[float, bool]] = []  # (time, failed) of every call it counted
    breaker = CircuitBreaker(policy)
    now = 0.0
    for step, outcome, _ in ops:
        now += step
        ticket = breaker.admit(now)
        if ticket == REJECTED:
            continue
        was_closed = breaker.state is CLOSED
        breaker.record(now, outcome, ticket)
        if ticket == ADMITTED and was_closed and outcome is not Outcome.IGNORED:
            counted.append((now, outcome is Outcome.FAILURE))
        if was_closed and breaker.state is OPEN:
            in_window = [f for t, f in counted if t > now - policy.window_seconds - 1e-9]
            assert len(in_window) >= policy.min_calls
            assert sum(in_window) >= policy.failure_ratio * policy.min_calls - 1e-9
        if breaker.state is not CLOSED:
            counted.clear()  # a circuit that closes again starts from an empty window


def test_a_half_open_circuit_with_its_probes_out_asks_callers_to_wait_a_second():
    breaker = opened(BreakerPolicy(open_seconds=5, half_open_probes=2), now=0.0)
    assert [breaker.admit(5.0) > ADMITTED for _ in range(2)] == [True, True]
    assert breaker.admit(5.0) == REJECTED
    assert breaker.retry_after(5.0) == PROBES_RETRY_AFTER == 1.0
    assert breaker.retry_after(60.0) == 1.0  # probes that never answered


def test_retry_after_is_never_longer_than_an_open_spell_of_a_short_policy():
    breaker = opened(BreakerPolicy(open_seconds=0.2, half_open_probes=1), now=0.0)
    breaker.admit(0.2)
    assert breaker.admit(0.2) == REJECTED
    assert breaker.retry_after(0.2) == pytest.approx(0.2)


@given(st.floats(0.01, 600), st.floats(0, 1000))
def test_retry_after_is_always_positive_when_a_call_is_rejected(open_seconds, later):
    breaker = opened(BreakerPolicy(open_seconds=open_seconds, half_open_probes=1), now=0.0)
    breaker.admit(later)
    if breaker.admit(later) == REJECTED:
        assert 0 < breaker.retry_after(later) <= open_seconds
