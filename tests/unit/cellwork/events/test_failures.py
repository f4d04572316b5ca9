"""Poison is told from a blip by the error alone; the retry decision is pure."""

import json

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cellwork import DeadlineExceeded, InvalidArgument, Unavailable, ValidationFailed
from cellwork.events import Poison
from cellwork.events.failures import GiveUp, Retry, RetryPolicy, classify


class Event(BaseModel):
    user_id: str


def validation_error() -> ValidationError:
    try:
        Event.model_validate({})
    except ValidationError as exc:
        return exc
    raise AssertionError("validated")


@pytest.mark.parametrize(
    "error",
    [
        DecodeError("truncated"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        json.JSONDecodeError("Expecting value", "x", 0),
        validation_error(),
        InvalidArgument("user_id is required"),
        ValidationFailed("bad kind"),
        Poison("no user"),
    ],
)
def test_errors_of_the_content_are_poison(error: Exception) -> None:
    assert classify(error) == "poison"


@pytest.mark.parametrize(
    "error",
    [Unavailable("down"), DeadlineExceeded("slow"), TimeoutError(), RuntimeError("breaker open")],
)
def test_anything_else_is_transient(error: Exception) -> None:
    assert classify(error) == "transient"


def test_an_error_raised_from_poison_is_poison() -> None:
    try:
        try:
            raise DecodeError("bad")
        except DecodeError as inner:
            raise RuntimeError("could not read the event") from inner
    except RuntimeError as outer:
        assert classify(outer) == "poison"


def test_poison_gives_up_at_the_first_delivery() -> None:
    assert RetryPolicy().decide("poison", age=0.0, deliveries=1) == GiveUp("poison")


def test_a_transient_failure_past_the_max_age_gives_up_as_exhausted() -> None:
    policy = RetryPolicy(max_age=60.0)
    assert policy.decide("transient", age=61.0, deliveries=12) == GiveUp("transient_exhausted")


def test_an_old_message_still_gets_its_minimum_of_deliveries() -> None:
    policy = RetryPolicy(max_age=60.0, min_deliveries=10)
    assert isinstance(policy.decide("transient", age=3600.0, deliveries=9), Retry)


@given(
    age=st.floats(min_value=0, max_value=1e6),
    deliveries=st.integers(min_value=1, max_value=10_000),
    max_age=st.floats(min_value=0.001, max_value=1e5),
)
def test_a_transient_failure_younger_than_max_age_is_always_retried_within_the_cap(
    age: float, deliveries: int, max_age: float
) -> None:
    policy = RetryPolicy(max_age=max_age, base=0.5, cap=15.0)
    decision = policy.decide("transient", age=age, deliveries=deliveries)
    if age < max_age or deliveries < policy.min_deliveries:
        assert isinstance(decision, Retry) and 0.0 <= decision.delay <= 15.0
    else:
        assert decision == GiveUp("transient_exhausted")


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_age=0)
    with pytest.raises(ValueError):
        RetryPolicy(base=2.0, cap=1.0)
