"""W3C trace context: traceparent headers parsed strictly, continued and started fresh."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.observability.tracing import (
    TraceContext,
    continue_trace,
    new_trace,
    new_traceparent,
    parse_traceparent,
)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.booleans())
def test_traceparent_round_trips(trace, span, sampled):
    ctx = TraceContext(trace.hex(), span.hex(), sampled)
    if set(trace) == {0} or set(span) == {0}:
        assert parse_traceparent(ctx.to_traceparent()) is None
    else:
        assert parse_traceparent(ctx.to_traceparent()) == ctx


def test_malformed_traceparent_is_ignored_not_raised():
    for bad in ["", "garbage", "01-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-xyz-abc-01", None]:
        assert parse_traceparent(bad) is None
        assert continue_trace(bad) is None


GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "bad",
    [
        GOOD.upper(),  # W3C: uppercase hex is invalid, not folded
        GOOD[:10] + "G" + GOOD[11:],
        GOOD.replace("-", "_"),
        GOOD + "0",
        GOOD[:-1],
        "00-" + "0" * 32 + GOOD[35:],  # an all-zero trace id
        GOOD[:36] + "0" * 16 + "-01",  # an all-zero span id
        GOOD[:3] + " " + GOOD[4:],
    ],
)
def test_a_traceparent_w3c_calls_invalid_starts_a_new_trace(bad):
    assert parse_traceparent(bad) is None


def test_a_traceparent_may_carry_whitespace_around_it():
    assert parse_traceparent(f" {GOOD}\t") == parse_traceparent(GOOD)


def test_the_sampled_flag_is_bit_zero_of_the_flags():
    assert parse_traceparent(GOOD[:-2] + "03").sampled is True
    assert parse_traceparent(GOOD[:-2] + "02").sampled is False


def test_continuing_a_trace_is_a_new_span_in_it():
    incoming = parse_traceparent(GOOD)
    mine = continue_trace(GOOD)
    assert mine.trace_id == incoming.trace_id and mine.sampled == incoming.sampled
    assert mine.span_id != incoming.span_id and len(mine.span_id) == 16


def test_fresh_traceparents_are_valid_distinct_roots():
    values = {new_traceparent() for _ in range(1000)}
    assert len(values) == 1000
    parsed = [parse_traceparent(v) for v in values]
    assert all(p is not None and p.sampled for p in parsed)
    assert len({p.trace_id for p in parsed}) == 1000


def test_a_child_traceparent_names_a_new_span_of_the_same_trace():
    parent = new_trace()
    child = parse_traceparent(parent.child_traceparent())
    assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
    unsampled = TraceContext(parent.trace_id, parent.span_id, sampled=False)
    assert parse_traceparent(unsampled.child_traceparent()).sampled is False


def test_child_span_keeps_the_trace():
    parent = new_trace()
    child = parent.child()
    assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
