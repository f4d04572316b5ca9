"""Live settings' pure part: the key layout, a group's layers, what a value is checked
against."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cellwork.config.dynamic import (
    ConfigKey,
    LiveGroup,
    check_group_name,
    check_value,
    group_schema,
    parse_cli_value,
    schema_key,
)
from cellwork.resilience.policy import BreakerPolicy, CallPolicy
from cellwork.rpc.faults import Faults


class Knobs(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int = Field(10, ge=1, le=100)
    mode: Literal["fast", "safe"] = "safe"
    low: int = 0
    high: int = 5

    @model_validator(mode="after")
    def ordered(self) -> Knobs:
        if self.low > self.high:
            raise ValueError("low above high")
        return self


def group(applied: list[Knobs] | None = None) -> LiveGroup[Knobs]:
    seen = applied if applied is not None else []
    return LiveGroup("knobs", Knobs, seen.append, Knobs())


def raw(value: object) -> bytes:
    return json.dumps(value).encode()


# -- keys ---------------------------------------------------------------------------------

tokens = st.from_regex(r"[A-Za-z0-9_=-]{1,12}", fullmatch=True)
groups = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)
fields = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@given(tokens, groups, fields, st.none() | tokens)
def test_a_key_reads_back_as_the_key_it_was_made_from(service, name, field, instance):
    key = ConfigKey(service, name, field, instance)
    assert ConfigKey.parse(str(key)) == key


def test_a_schema_key_is_told_apart_from_a_value_key():
    assert schema_key("feed", "faults") == "feed.faults._schema"
    assert ConfigKey.parse("feed.faults._schema").is_schema
    assert not ConfigKey.parse("feed.faults.delay_ms.feed-1").is_schema
    assert str(ConfigKey("feed", "faults", "delay_ms", "host.local-1")) == (
        "feed.faults.delay_ms.host_local-1"
    )


@pytest.mark.parametrize(
    "key",
    ["feed.faults", "feed..delay_ms", "a.b.c.d.e", "feed.9g.x", "feed.faults._schema.feed-1"],
)
def test_keys_not_laid_out_as_documented_are_refused(key):
    with pytest.raises(ValueError):
        ConfigKey.parse(key)


def test_group_names_are_plain_words():
    assert check_group_name("calls") == "calls"
    for bad in ("", "a.b", "9x", "x" * 65, "_private"):
        with pytest.raises(ValueError):
            check_group_name(bad)


# -- a group's layers ---------------------------------------------------------------------


def test_a_valid_value_is_applied_and_an_invalid_one_keeps_the_last_good_value():
    applied: list[Knobs] = []
    knobs = group(applied)
    assert knobs.offer("limit", raw(20)).applied
    assert knobs.value.limit == 20 and applied == [knobs.value]
    for bad, why in [(raw(0), "greater than or equal to 1"), (b"{not json", "not JSON")]:
        outcome = knobs.offer("limit", bad)
        assert not outcome.applied and why in (outcome.refused or "")
    assert knobs.offer("nope", raw(1)).refused == "no field 'nope' in knobs"
    assert knobs.value.limit == 20 and len(applied) == 1


def test_an_instance_override_wins_and_its_deletion_falls_back_to_the_service_value():
    knobs = group()
    knobs.offer("limit", raw(20))
    knobs.offer("limit", raw(30), instance=True)
    assert knobs.value.limit == 30
    knobs.offer("limit", raw(25))  # the service-wide value changes under the override
    assert knobs.value.limit == 30
    assert knobs.withdraw("limit", instance=True).applied
    assert knobs.value.limit == 25
    assert knobs.withdraw("limit").applied
    assert knobs.value == Knobs()
    assert not knobs.withdraw("limit").applied  # nothing left to withdraw


def test_values_are_validated_together_and_a_refused_one_leaves_nothing_behind():
    knobs = group()
    assert knobs.offer("low", raw(7)).refused is not None  # above high=5
    assert knobs.offer("high", raw(9)).applied
    assert knobs.offer("low", raw(7)).applied  # valid now; the refused 7 was not kept
    assert knobs.withdraw("high").refused is not None  # would leave low above high
    assert (knobs.value.low, knobs.value.high) == (7, 9)


def test_an_apply_that_raises_refuses_the_value():
    def refuse(value: Knobs) -> None:
        raise RuntimeError("not now")

    knobs = LiveGroup("knobs", Knobs, refuse, Knobs())
    outcome = knobs.offer("limit", raw(50))
    assert outcome.refused is not None and "not now" in outcome.refused
    assert knobs.value == Knobs()
    assert knobs.offer("limit", raw(50)).refused is not None  # still refused: not kept


def test_a_value_equal_to_the_applied_one_is_not_applied_again():
    applied: list[Knobs] = []
    knobs = group(applied)
    assert knobs.offer("mode", raw("safe")) == knobs.offer("mode", raw("safe"))
    assert applied == []


writes = st.lists(
    st.tuples(
        st.sampled_from(["limit", "mode", "low", "high", "bogus"]),
        st.booleans(),  # the instance's layer or the service's
        st.one_of(
            st.integers(-5, 120), st.sampled_from(["fast", "safe", "slow"]), st.none()
        ),  # None: a deletion
    ),
    max_size=30,
)


@given(writes)
def test_the_applied_value_always_validates_and_only_applies_change_it(steps):
    applied: list[Knobs] = []
    knobs = group(applied)
    for field, instance, value in steps:
        before = knobs.value
        if value is None:
            outcome = knobs.withdraw(field, instance=instance)
        else:
            outcome = knobs.offer(field, raw(value), instance=instance)
        assert Knobs.model_validate(knobs.value.model_dump()) == knobs.value
        if outcome.applied:
            assert applied[-1] is knobs.value and knobs.value != before
        else:
            assert knobs.value is before
    assert len(applied) == len({id(v) for v in applied})


# -- nested groups merge field by field ---------------------------------------------------

INITIAL = CallPolicy(breaker=BreakerPolicy(failure_ratio=0.3), timeout=2.0)


def calls_group() -> LiveGroup[CallPolicy]:
    return LiveGroup("calls_feed", CallPolicy, lambda _: None, INITIAL)


def test_a_nested_field_merges_over_the_layers_under_it_and_the_initial_value():
    """`config set gateway.calls_feed.breaker '{"min_calls":40}'`, then
    `'{"open_seconds":2}' --instance X`: X has both, over the client's own policy."""
    calls = calls_group()
    assert calls.offer("breaker", raw({"min_calls": 40})).applied
    assert calls.value.breaker == BreakerPolicy(failure_ratio=0.3, min_calls=40)
    assert calls.offer("breaker", raw({"open_seconds": 2}), instance=True).applied
    assert calls.value.breaker == BreakerPolicy(failure_ratio=0.3, min_calls=40, open_seconds=2)
    assert calls.value.timeout == 2.0
    assert calls.withdraw("breaker").applied  # the service-wide layer goes
    assert calls.value.breaker == BreakerPolicy(failure_ratio=0.3, open_seconds=2)
    assert calls.withdraw("breaker", instance=True).applied
    assert calls.value == INITIAL


def test_a_refused_nested_value_leaves_nothing_behind():
    calls = calls_group()
    assert calls.offer("breaker", raw({"min_calls": 0})).refused is not None
    assert calls.offer("breaker", raw({"bogus": 1})).refused is not None
    assert calls.offer("breaker", raw({"open_seconds": 2})).applied
    assert calls.value.breaker == BreakerPolicy(failure_ratio=0.3, open_seconds=2)


breaker_values = st.fixed_dictionaries(
    {},
    optional={
        "failure_ratio": st.floats(0.01, 1.0),
        "min_calls": st.integers(1, 1000),
        "open_seconds": st.floats(0.1, 600),
        "half_open_probes": st.integers(1, 100),
    },
)


@given(st.lists(st.tuples(st.booleans(), breaker_values | st.none()), max_size=12))
def test_each_nested_field_comes_from_the_highest_layer_that_names_it(steps):
    calls = calls_group()
    layers: list[dict[str, object] | None] = [None, None]  # service-wide, instance
    for instance, value in steps:
        if value is None:
            calls.withdraw("breaker", instance=instance)
        else:
            calls.offer("breaker", raw(value), instance=instance)
        layers[instance] = value
    for name in BreakerPolicy.model_fields:
        named = [layer[name] for layer in reversed(layers) if layer and name in layer]
        expected = named[0] if named else getattr(INITIAL.breaker, name)
        assert getattr(calls.value.breaker, name) == expected


# -- what the CLI checks a value against ---------------------------------------------------


def test_values_are_checked_against_the_published_schema_of_their_field():
    schema = group_schema(Faults)
    assert check_value(schema, "fail_rate", 0.5) is None
    assert check_value(schema, "delay_ms", 200) is None
    assert "greater than the maximum of 1" in (check_value(schema, "fail_rate", 1.5) or "")
    assert "is not one of" in (check_value(schema, "fail_code", "NOPE") or "")
    assert "is not of type" in (check_value(schema, "cpu", "yes") or "")
    assert "no field 'rate'" in (check_value(schema, "rate", 1) or "")


def test_a_command_line_value_is_json_when_it_parses_else_text():
    assert parse_cli_value("200") == 200
    assert parse_cli_value("true") is True
    assert parse_cli_value('"200"') == "200"
    assert parse_cli_value("INTERNAL") == "INTERNAL"
