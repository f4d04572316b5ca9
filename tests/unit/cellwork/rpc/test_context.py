import time

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
from cellwork.rpc.context import (
    CallContext,
    caller_from_user_agent,
    caller_user_agent,
    effective_timeout,
    root_context,
)


def test_outgoing_timeout_is_capped_by_what_the_caller_has_left():
    parent = CallContext("r", new_trace(), deadline=time.monotonic() + 0.3)
    assert 0.29 < effective_timeout(5.0, parent) <= 0.3
    assert effective_timeout(0.1, parent) == 0.1


def test_timeout_without_parent_deadline_is_the_requested_one():
    assert effective_timeout(2.0, None) == 2.0
    assert effective_timeout(2.0, CallContext("r", new_trace())) == 2.0
    assert effective_timeout(None, None) is None


def test_expired_parent_leaves_no_time():
    parent = CallContext("r", new_trace(), deadline=time.monotonic() - 0.01)
    assert effective_timeout(1.0, parent) < 0


def test_root_context_has_fresh_ids_and_deadline():
    a, b = root_context(1.0), root_context(request_id="from-the-edge")
    assert a.request_id != b.request_id and a.trace.trace_id != b.trace.trace_id
    assert a.request_id == a.trace.trace_id and b.request_id == "from-the-edge"
    assert 0.9 < a.time_remaining() <= 1.0
    assert b.time_remaining() is None


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


def test_the_caller_is_the_first_token_of_the_user_agent_unless_grpc_named_it():
    assert caller_from_user_agent("feed grpc-python-asyncio/1.85.3 grpc-c/58.0.0") == "feed"
    assert caller_from_user_agent("recommender grpc-go/1.60.0") == "recommender"
    assert caller_from_user_agent("grpc-python-asyncio/1.85.3 grpc-c/58.0.0") == ""
    assert caller_from_user_agent("grpc-java-netty/1.62.2") == ""
    assert caller_from_user_agent("grpc-gateway grpc-go/1.60.0") == "grpc-gateway"
    assert caller_from_user_agent("curl/8.5.0") == ""  # a product with a version is no caller
    assert caller_from_user_agent("") == ""


@given(st.text(min_size=1, max_size=80))
def test_a_caller_name_survives_the_user_agent_as_one_token(name):
    agent = caller_user_agent(name)
    assert agent and " " not in agent and "/" not in agent and len(agent) <= 64
    seen = caller_from_user_agent(f"{agent} grpc-python-asyncio/1.85.3 grpc-c/58.0.0")
    assert seen == agent
