"""An instance's gRPC server over real gRPC and NATS: health, reflection, drain."""

import asyncio

import pytest

from cellwork import errors
from cellwork.observability.metrics import server_metrics
from cellwork.testing.v1 import echo_pb2
from tests.waiting import BOUND, wait_until


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
    in_flight = server_metrics().in_flight("echo", "Echo/Echo")  # both servers share it
    before = in_flight.value
    slow = asyncio.create_task(
        client.call("Echo", echo_pb2.EchoRequest(delay_ms=1000), timeout=BOUND)
    )
    await wait_until(lambda: in_flight.value > before, "the call to reach a server")
    victim_ids = {s.settings.instance_id for s in two_echoes}
    await asyncio.gather(*(s.drain(timeout=BOUND) for s in two_echoes))
    reply = await slow
    assert reply.instance_id in victim_ids
    assert await registry.list("echo") == []
    with pytest.raises(errors.Unavailable):
        await client.call("Echo", echo_pb2.EchoRequest(), timeout=1)
