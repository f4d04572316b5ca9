"""The retry decision, on a clock passed in: which failures, how often, how long, how far."""

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.errors import ERROR_TRAILER
from cellwork.resilience.policy import RetryPolicy
from cellwork.resilience.retry import (
    REFUSES_RETRY,
    FailureKind,
    decide_retry,
    failure_kind,
    pushback_seconds,
    transport_wording,
)
from cellwork.resilience.retry_budget import RetryBudget

U = grpc.StatusCode.UNAVAILABLE


def decide(**overrides):
    args = {
        "code": U,
        "kind": FailureKind.ANSWER,
        "trailers": (),
        "idempotent": True,
        "attempt": 1,
        "others_left": True,
        "now": 100.0,
        "deadline": 105.0,
        "policy": RetryPolicy(),
        "budget": RetryBudget(now=100.0),
        "draw": 0.5,
    }
    args.update(overrides)
    return decide_retry(**args)


# Details as grpc.aio 1.85 gives them (found by killing and resetting servers mid-call).
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:43617: "
    "Failed to connect to remote host: Connection refused"
)
KILLED_MID_CALL = "Stream removed (Socket closed)"
RESET_MID_CALL = "Stream removed (recvmsg:Connection reset by peer (104))"


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (U, REFUSED, FailureKind.NOT_CONNECTED),
        (U, KILLED_MID_CALL, FailureKind.RESET),
        (U, RESET_MID_CALL, FailureKind.RESET),
        (grpc.StatusCode.UNKNOWN, "Stream removed", FailureKind.RESET),
        (U, "echo raised Unavailable", FailureKind.ANSWER),
        (grpc.StatusCode.INTERNAL, "boom", FailureKind.ANSWER),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", FailureKind.ANSWER),
    ],
)
def test_failures_are_told_apart_by_status_and_details(code, details, kind):
    assert failure_kind(code, details) is kind


@pytest.mark.parametrize("details", [REFUSED, KILLED_MID_CALL, RESET_MID_CALL])
def test_an_answer_with_the_error_trailer_reached_a_server_whatever_its_wording(details):
    """A middle service passing on its dependency's failure in gRPC's words answered."""
    trailers = ((ERROR_TRAILER, "unavailable"),)
    assert failure_kind(U, details, trailers) is FailureKind.ANSWER
    assert failure_kind(U, details, (("other", "x"),)) is not FailureKind.ANSWER


def test_grpc_transport_wording_is_told_from_a_servers_own_message():
    assert transport_wording(REFUSED) and transport_wording(KILLED_MID_CALL)
    assert not transport_wording("echo raised Unavailable")
    assert not transport_wording("circuit open to catalog: too many of its calls failed")


def test_a_call_that_never_reached_a_server_is_retried_at_once_whatever_the_method():
    verdict = decide(kind=FailureKind.NOT_CONNECTED, idempotent=False)
    assert (verdict.retry, verdict.reason, verdict.wait) == (True, "not_connected", 0.0)


def test_a_non_idempotent_call_that_reached_a_server_is_not_retried():
    for kind in (FailureKind.ANSWER, FailureKind.RESET):
        assert decide(kind=kind, idempotent=False).reason == "not_idempotent"


def test_idempotent_calls_are_retried_on_unavailable_and_resets_only():
    assert decide().reason == "unavailable"
    assert decide(kind=FailureKind.RESET).reason == "connection_reset"
    for code in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNKNOWN,
    ):
        assert not decide(code=code).retry, code


def test_at_most_max_attempts():
    assert decide(attempt=2).retry
    assert decide(attempt=3).reason == "max_attempts"


def test_never_the_same_endpoint_again():
    assert decide(others_left=False).reason == "no_other_endpoint"


def test_full_jitter_back_off_from_25_to_250_ms():
    policy = RetryPolicy(max_attempts=10)
    waits = [decide(attempt=a, draw=0.999_999, policy=policy).wait for a in (1, 2, 3, 4, 5)]
    assert waits == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25], abs=1e-6)
    assert decide(draw=0.0).wait == 0.0


def test_a_back_off_that_leaves_no_time_for_the_attempt_stops_the_call():
    policy = RetryPolicy(min_attempt_seconds=0.005)
    # draw 1.0: the first back-off's ceiling, 25 ms
    assert decide(now=100.0, deadline=100.031, draw=0.999_999, policy=policy).retry
    assert decide(now=100.0, deadline=100.029, draw=0.999_999, policy=policy).reason == "deadline"


def test_the_servers_pushback_is_waited_exactly_and_a_bad_one_forbids_the_retry():
    assert decide(trailers=(("grpc-retry-pushback-ms", "120"),)).wait == 0.120
    assert decide(trailers=(("grpc-retry-pushback-ms", "0"),)).wait == 0.0
    for bad in ("-1", "soon", "1.5", ""):
        assert decide(trailers=(("grpc-retry-pushback-ms", bad),)).reason == "pushback", bad
    far = (("grpc-retry-pushback-ms", "10000"),)
    assert decide(trailers=far, deadline=105.0).reason == "deadline"


@pytest.mark.parametrize(
    ("trailers", "seconds"),
    [
        ((), None),
        ((("x-other", "5"),), None),
        ((("grpc-retry-pushback-ms", "250"),), 0.25),
        ((("grpc-retry-pushback-ms", b"7"),), 0.007),
        ((("grpc-retry-pushback-ms", "-5"),), REFUSES_RETRY),
        ((("grpc-retry-pushback-ms", "٣"),), REFUSES_RETRY),  # a digit, not an ASCII one
    ],
)
def test_pushback_is_read_as_a06_defines_it(trailers, seconds):
    assert pushback_seconds(trailers) == seconds


def test_retries_stop_when_the_budget_is_spent_and_a_refused_retry_spends_nothing():
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, capacity=2, now=100.0)
    assert budget.tokens == 1.0
    assert decide(budget=budget, attempt=3).reason == "max_attempts"
    assert budget.tokens == 1.0
    assert decide(budget=budget).retry
    assert decide(budget=budget).reason == "budget"


@given(
    st.sampled_from(list(FailureKind)),
    st.sampled_from([U, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED]),
    st.booleans(),
    st.integers(1, 12),
    st.floats(0, 2),  # time left before the deadline
    st.floats(0, 0.999),
    st.one_of(st.none(), st.integers(-5, 3000)),
)
def test_a_retry_is_never_past_the_deadline_nor_past_max_attempts(
    kind, code, idempotent, attempt, left, draw, pushback_ms
):
    policy = RetryPolicy()
    trailers = () if pushback_ms is None else (("grpc-retry-pushback-ms", str(pushback_ms)),)
    verdict = decide(
        kind=kind,
        code=code,
        idempotent=idempotent,
        attempt=attempt,
        deadline=100.0 + left,
        draw=draw,
        trailers=trailers,
        policy=policy,
    )
    if verdict.retry:
        assert attempt < policy.max_attempts
        assert 100.0 + verdict.wait + policy.min_attempt_seconds <= 100.0 + left
        assert verdict.wait <= max(policy.backoff_max, (pushback_ms or 0) / 1000)
        assert kind is FailureKind.NOT_CONNECTED or idempotent
