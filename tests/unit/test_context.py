import time

from hypothesis import given
from hypothesis import strategies as st

from cellwork.observability.tracing import TraceContext, new_trace, parse_traceparent
from cellwork.rpc.context import CallContext, effective_timeout, root_context


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


def test_child_span_keeps_the_trace():
    parent = new_trace()
    child = parent.child()
    assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
