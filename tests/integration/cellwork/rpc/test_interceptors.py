"""The rpc path over real gRPC and NATS: deadlines, metadata, errors, metrics, drain."""

import asyncio
import urllib.request

import pytest

from cellwork import errors
from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from cellwork.testing.echo import create_service, echo_stub
from cellwork.testing.v1 import echo_pb2


def wire_slack(ms: float) -> float:
    """gRPC rounds the ``grpc-timeout`` header up (about 1 %) to keep it compressible."""
    return ms * 1.01 + 1.0


@pytest.fixture
async def two_echoes(nats_server):
    services = [
        await start_service(create_service, nats_server.url, instance_id=f"echo-{i}")
        for i in range(2)
    ]
    yield services
    for service in services:
        await service.close()


@pytest.fixture
async def client(registry, two_echoes):
    client = await connect_client(registry, "echo", echo_stub, caller="test")
    await client.balancer.wait_for_endpoints(2)
    yield client
    await client.close()


async def test_deadline_propagates_across_two_hops(client):
    request = echo_pb2.RelayRequest(wait_ms=100, inner=echo_pb2.EchoRequest(payload=b"x"))
    reply = await client.call("Relay", request, timeout=0.3)
    # The second hop gets what the first had left: 300 ms less the 100 ms spent.
    assert 100 < reply.deadline_remaining_ms <= wire_slack(200)
    assert reply.payload == b"x"


async def test_a_hop_with_no_time_left_fails_with_deadline_exceeded(client):
    request = echo_pb2.RelayRequest(wait_ms=200, inner=echo_pb2.EchoRequest())
    with pytest.raises(errors.DeadlineExceeded):
        await client.call("Relay", request, timeout=0.1)


async def test_request_id_and_trace_id_travel_with_the_call(client):
    from cellwork.rpc.context import reset_current_call, root_context, set_current_call

    parent = root_context(timeout=2.0, request_id="edge-request-1")
    token = set_current_call(parent)
    try:
        reply = await client.call("Relay", echo_pb2.RelayRequest(inner=echo_pb2.EchoRequest()))
    finally:
        reset_current_call(token)
    assert reply.request_id == parent.request_id
    assert reply.trace_id == parent.trace.trace_id
    assert 0 < reply.deadline_remaining_ms <= wire_slack(2000)


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


async def test_health_and_reflection_are_served(two_echoes):
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    address = two_echoes[0].info.address
    async with aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "cellwork.testing.v1.Echo"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            assert {"cellwork.testing.v1.Echo", "grpc.health.v1.Health"} <= names


async def test_drain_finishes_in_flight_calls_then_deregisters(registry, client, two_echoes):
    slow = asyncio.create_task(client.call("Echo", echo_pb2.EchoRequest(delay_ms=400), timeout=3))
    await asyncio.sleep(0.1)
    victim_ids = {s.settings.instance_id for s in two_echoes}
    await asyncio.gather(*(s.drain(timeout=3) for s in two_echoes))
    reply = await slow
    assert reply.instance_id in victim_ids
    assert await registry.list("echo") == []
    with pytest.raises(errors.Unavailable):
        await client.call("Echo", echo_pb2.EchoRequest(), timeout=1)
