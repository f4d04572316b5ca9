"""The call path over real gRPC and NATS: deadlines, ids and the caller travel with the call;
errors cross as their class; the server's boundary counts every call."""

import asyncio
import urllib.request

import pytest

from cellwork import errors
from cellwork.testing.v1 import echo_pb2


def wire_slack(ms: float) -> float:
    """gRPC rounds the ``grpc-timeout`` header up (about 1 %) to keep it compressible."""
    return ms * 1.01 + 1.0


async def test_deadline_propagates_across_two_hops(client):
    request = echo_pb2.RelayRequest(wait_ms=500, inner=echo_pb2.EchoRequest(payload=b"x"))
    reply = await client.call("Relay", request, timeout=5.0)
    # The second hop gets what the first had left: 5 s less the 500 ms spent, and less
    # whatever a busy machine took (given seconds here, not a tight margin).
    assert 2500 < reply.deadline_remaining_ms <= wire_slack(4500)
    assert reply.payload == b"x"


async def test_a_hop_with_no_time_left_fails_with_deadline_exceeded(client):
    request = echo_pb2.RelayRequest(wait_ms=200, inner=echo_pb2.EchoRequest())
    with pytest.raises(errors.DeadlineExceeded):
        await client.call("Relay", request, timeout=0.1)


async def test_request_id_and_trace_id_travel_with_the_call(client):
    from cellwork.rpc.context import reset_current_call, root_context, set_current_call

    parent = root_context(timeout=30.0, request_id="edge-request-1")
    token = set_current_call(parent)
    try:
        reply = await client.call("Relay", echo_pb2.RelayRequest(inner=echo_pb2.EchoRequest()))
    finally:
        reset_current_call(token)
    assert reply.request_id == parent.request_id
    assert reply.trace_id == parent.trace.trace_id
    assert 0 < reply.deadline_remaining_ms <= wire_slack(30_000)


async def test_a_root_call_uses_its_trace_id_as_request_id(client):
    reply = await client.call("Echo", echo_pb2.EchoRequest())
    assert len(reply.trace_id) == 32 and reply.request_id == reply.trace_id


async def test_the_server_knows_the_caller_by_the_name_its_client_was_given(client):
    reply = await client.call("Echo", echo_pb2.EchoRequest())
    assert reply.caller == "test"


@pytest.mark.parametrize(
    ("options", "metadata", "expected"),
    [
        ((), (), ""),  # a plain gRPC client names nobody
        ((("grpc.primary_user_agent", "billing"),), (), "billing"),
        ((("grpc.primary_user_agent", "billing"),), (("x-cellwork-caller", "ops"),), "ops"),
    ],
)
async def test_any_grpc_client_can_name_itself_by_user_agent_or_header(
    two_echoes, options, metadata, expected
):
    from grpc import aio

    from cellwork.testing.v1 import echo_pb2_grpc

    async with aio.insecure_channel(two_echoes[0].info.address, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.Echo(echo_pb2.EchoRequest(), timeout=2, metadata=metadata)
    assert reply.caller == expected
    assert len(reply.trace_id) == 32  # no traceparent: the server starts a trace


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NotFound", errors.NotFound),
        ("InvalidArgument", errors.InvalidArgument),
        ("AlreadyExists", errors.AlreadyExists),
        ("crash", errors.Internal),
    ],
)
async def test_domain_errors_cross_the_wire_as_the_same_class(client, name, expected):
    with pytest.raises(expected) as caught:
        await client.call("Fail", echo_pb2.EchoRequest(payload=name.encode()))
    if expected is errors.Internal:
        assert "crash" not in caught.value.message  # no internals leak to the caller


async def test_server_metrics_count_calls_by_method_and_code(client, two_echoes):
    for _ in range(4):
        await client.call("Echo", echo_pb2.EchoRequest())
    with pytest.raises(errors.NotFound):
        await client.call("Fail", echo_pb2.EchoRequest(payload=b"NotFound"))
    port = two_echoes[0].metrics_port
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    text = body.decode()
    ok = [
        line
        for line in text.splitlines()
        if line.startswith("cellwork_rpc_server_requests_total")
        and 'method="Echo/Echo"' in line
        and 'code="OK"' in line
    ]
    assert ok and float(ok[0].split()[-1]) >= 4  # both in-process servers share a registry
    assert 'code="NOT_FOUND"' in text
    assert "cellwork_rpc_server_duration_seconds_bucket" in text
    assert "cellwork_rpc_client_requests_total" in text
    assert "process_resident_memory_bytes" in text
