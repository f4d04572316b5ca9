"""The call path over real gRPC and NATS: deadlines, ids and the caller travel with the call;
errors cross as their class; the server's boundary counts every call, refuses a call whose
deadline passed before it was served, and a cancelled call cancels its handler."""

import asyncio
import time
import urllib.request

import grpc
import pytest
from grpc import aio

from cellwork import errors
from cellwork.observability.metrics import server_metrics
from cellwork.rpc.interceptors import ServerChain
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.waiting import wait_until


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


# --- deadlines at the server: refused on arrival, cancellation reaching the handler ----


class Watched(echo_pb2_grpc.EchoServicer):
    """An echo that counts the calls it starts and those cancelled under it."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def Echo(self, request, context):
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return echo_pb2.EchoResponse(payload=request.payload)


class BusyLoopBeforeTheChain(aio.ServerInterceptor):
    """Keeps the loop busy between gRPC accepting a call and the chain's boundary, as a
    server busy with CPU work does; ``stall`` seconds, for calls with ``x-stall``."""

    def __init__(self, stall: float) -> None:
        self.stall = stall

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        if handler is None or "x-stall" not in metadata:
            return handler
        chain = handler.unary_unary

        async def stalled(request, context):
            busy_until = time.monotonic() + self.stall
            while time.monotonic() < busy_until:  # CPU work holding the loop
                pass
            return await chain(request, context)

        return grpc.unary_unary_rpc_method_handler(
            stalled,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@pytest.fixture
async def watched_server():
    servicer = Watched()
    chain = ServerChain("watched")
    server = aio.server(interceptors=[BusyLoopBeforeTheChain(0.3), chain])
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, chain, echo_pb2_grpc.EchoStub(channel)
    await server.stop(None)


async def test_a_call_whose_deadline_passed_before_it_was_served_never_runs_its_handler(
    watched_server,
):
    servicer, _chain, stub = watched_server
    expired_before = server_metrics().count("watched", "Echo/Echo", "DEADLINE_EXCEEDED")
    for _ in range(3):
        with pytest.raises(aio.AioRpcError) as failed:
            await stub.Echo(echo_pb2.EchoRequest(), timeout=0.1, metadata=(("x-stall", "1"),))
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(
        lambda: (
            server_metrics().count("watched", "Echo/Echo", "DEADLINE_EXCEEDED")
            == expired_before + 3
        ),
        "the boundary to refuse the three expired calls",
    )
    assert servicer.started == 0
    # The same method with time left still runs.
    servicer.release.set()
    assert (await stub.Echo(echo_pb2.EchoRequest(payload=b"ok"), timeout=5)).payload == b"ok"
    assert servicer.started == 1


async def test_a_client_cancelling_its_call_cancels_the_handler_and_frees_its_slot(
    watched_server,
):
    servicer, chain, stub = watched_server
    call = stub.Echo(echo_pb2.EchoRequest(), timeout=30)
    await wait_until(lambda: servicer.started == 1, "the handler to start")
    assert chain.limiters["Echo/Echo"].in_flight == 1
    call.cancel()
    await wait_until(lambda: servicer.cancelled == 1, "the handler to see CancelledError")
    await wait_until(lambda: chain.limiters["Echo/Echo"].in_flight == 0, "the slot to be freed")


async def test_a_deadline_expiring_mid_call_cancels_the_handler(watched_server):
    servicer, chain, stub = watched_server
    cancelled_before = server_metrics().count("watched", "Echo/Echo", "CANCELLED")
    with pytest.raises(aio.AioRpcError) as failed:
        await stub.Echo(echo_pb2.EchoRequest(), timeout=0.3)
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: servicer.cancelled == 1, "the handler to see CancelledError")
    await wait_until(
        lambda: server_metrics().count("watched", "Echo/Echo", "CANCELLED") == cancelled_before + 1,
        "the boundary to count the call as cancelled",
    )
    assert chain.limiters["Echo/Echo"].in_flight == 0
