"""A call's context: the deadline it passes on, its ids, and the caller it names."""

import time

from hypothesis import given
from hypothesis import strategies as st

from cellwork.observability.tracing import new_trace
from cellwork.rpc.context import (
    CallContext,
    caller_from_user_agent,
    caller_user_agent,
    effective_timeout,
    root_context,
)


def test_outgoing_timeout_is_capped_by_what_the_caller_has_left():
    before = time.monotonic()
    parent = CallContext("r", new_trace(), deadline=before + 30.0)
    capped = effective_timeout(50.0, parent)
    spent = time.monotonic() - before  # however long a busy machine took between the lines
    assert 30.0 - spent <= capped <= 30.0
    assert effective_timeout(0.1, parent) == 0.1


def test_timeout_without_parent_deadline_is_the_requested_one():
    assert effective_timeout(2.0, None) == 2.0
    assert effective_timeout(2.0, CallContext("r", new_trace())) == 2.0
    assert effective_timeout(None, None) is None


def test_expired_parent_leaves_no_time():
    parent = CallContext("r", new_trace(), deadline=time.monotonic() - 0.01)
    assert effective_timeout(1.0, parent) < 0


def test_root_context_has_fresh_ids_and_deadline():
    before = time.monotonic()
    a, b = root_context(1.0), root_context(request_id="from-the-edge")
    remaining = a.time_remaining()
    spent = time.monotonic() - before
    assert a.request_id != b.request_id and a.trace.trace_id != b.trace.trace_id
    assert a.request_id == a.trace.trace_id and b.request_id == "from-the-edge"
    assert 1.0 - spent <= remaining <= 1.0
    assert b.time_remaining() is None


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
