"""CallPolicy: the issue's defaults, bounds on every knob, a schema a live setting can use."""

import pytest
from pydantic import ValidationError

from cellwork import CallPolicy
from cellwork.resilience.policy import BreakerPolicy, EjectionPolicy, RetryPolicy


def test_the_defaults_are_the_cells():
    policy = CallPolicy()
    assert policy.timeout == 5.0 and policy.max_in_flight == 1000
    assert policy.retry == RetryPolicy(
        max_attempts=3,
        backoff_base=0.025,
        backoff_max=0.25,
        budget_ratio=0.2,
        budget_min_per_second=10.0,
    )
    assert policy.breaker == BreakerPolicy(
        failure_ratio=0.5, min_calls=20, window_seconds=10, open_seconds=5, half_open_probes=3
    )
    assert policy.ejection == EjectionPolicy(
        consecutive_failures=5,
        consecutive_refusals=1,
        base_seconds=30,
        max_seconds=300,
        max_ejected_fraction=0.5,
        panic_threshold=0.5,
    )


def test_every_field_of_the_schema_has_a_description_and_every_number_bounds():
    schema = CallPolicy.model_json_schema()
    models = [schema, *schema["$defs"].values()]
    assert len(models) == 4
    for model in models:
        for name, field in model["properties"].items():
            assert field.get("description"), name
            if field.get("type") in ("number", "integer"):
                assert ("minimum" in field or "exclusiveMinimum" in field) and (
                    "maximum" in field or "exclusiveMaximum" in field
                ), name


def test_a_policy_is_frozen_and_refuses_values_out_of_bounds_or_unknown():
    policy = CallPolicy()
    with pytest.raises(ValidationError):
        policy.timeout = 1.0  # type: ignore[misc]
    for bad in (
        {"timeout": 0},
        {"max_in_flight": 0},
        {"retry": {"max_attempts": 0}},
        {"retry": {"backoff_base": 1.0, "backoff_max": 0.5}},
        {"breaker": {"failure_ratio": 1.5}},
        {"ejection": {"max_ejected_fraction": 2}},
        {"ejection": {"base_seconds": 100, "max_seconds": 10}},
        {"retries": 3},
    ):
        with pytest.raises(ValidationError):
            CallPolicy.model_validate(bad)


def test_a_policy_round_trips_through_json():
    policy = CallPolicy.model_validate({"retry": {"max_attempts": 2}, "max_in_flight": 10})
    assert CallPolicy.model_validate_json(policy.model_dump_json()) == policy
