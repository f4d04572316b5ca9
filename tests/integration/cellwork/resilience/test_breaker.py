"""The circuit breaker over a real instance: it opens on failures, then refuses without an
attempt, lets probes through when its time is up and closes when they succeed; answers
about the request, shed calls and refused connections never open it."""

from __future__ import annotations

import time

import pytest

from cellwork import CallPolicy, errors
from cellwork.discovery import InstanceInfo
from cellwork.resilience import BreakerPolicy, BreakerState
from cellwork.rpc.client import connect_client
from cellwork.runtime.nats_server import free_port
from cellwork.testing.echo import echo_stub
from cellwork.testing.v1 import echo_pb2
from tests.integration.cellwork.echoes import calls_to, metric
from tests.waiting import wait_until

POLICY = CallPolicy(
    breaker=BreakerPolicy(min_calls=4, failure_ratio=0.5, open_seconds=0.5, half_open_probes=2)
)


async def fail(client, error: str) -> None:
    with pytest.raises(errors.CellworkError):
        await client.call("Fail", echo_pb2.EchoRequest(payload=error.encode()))


async def test_it_opens_rejects_without_attempts_then_closes_after_its_probes(registry, echoes):
    await echoes("e0")
    client = await connect_client(registry, "echo", echo_stub, policy=POLICY)
    opened = metric("cellwork_breaker_transitions_total", service="echo", state="open")
    rejected = metric("cellwork_rpc_client_rejected_total", service="echo", reason="breaker_open")
    try:
        await client.balancer.wait_for_endpoints(1)
        for _ in range(4):
            await fail(client, "Internal")
        assert client.breaker.state is BreakerState.OPEN
        assert metric("cellwork_breaker_state", service="echo") == 2
        attempts = calls_to(client, "e0")
        with pytest.raises(errors.Unavailable, match="circuit open") as caught:
            await client.call("Echo", echo_pb2.EchoRequest())
        assert 0 < caught.value.retry_after <= 0.5
        assert calls_to(client, "e0") == attempts  # no attempt made
        assert (
            metric("cellwork_rpc_client_rejected_total", service="echo", reason="breaker_open")
            == rejected + 1
        )
        await wait_until(
            lambda: metric("cellwork_breaker_state", service="echo") == 1, "it to half-open"
        )
        for _ in range(2):  # the probes
            await client.call("Echo", echo_pb2.EchoRequest())
        assert client.breaker.state is BreakerState.CLOSED
        assert metric("cellwork_breaker_state", service="echo") == 0
        assert (
            metric("cellwork_breaker_transitions_total", service="echo", state="open") == opened + 1
        )
    finally:
        await client.close()


async def test_a_failed_probe_opens_it_again(registry, echoes):
    await echoes("e0")
    client = await connect_client(registry, "echo", echo_stub, policy=POLICY)
    try:
        await client.balancer.wait_for_endpoints(1)
        for _ in range(4):
            await fail(client, "Unavailable")
        await wait_until(
            lambda: client.breaker.state_at(time.monotonic()) is BreakerState.HALF_OPEN,
            "it to half-open",
        )
        await fail(client, "DeadlineExceeded")
        assert client.breaker.state is BreakerState.OPEN
        with pytest.raises(errors.Unavailable, match="circuit open"):
            await client.call("Echo", echo_pb2.EchoRequest())
    finally:
        await client.close()


@pytest.mark.parametrize(
    "answer",
    ["NotFound", "InvalidArgument", "FailedPrecondition", "Overloaded", "ResourceExhausted"],
)
async def test_answers_about_the_request_and_shed_calls_never_open_it(registry, echoes, answer):
    await echoes("e0")
    client = await connect_client(registry, "echo", echo_stub, policy=POLICY)
    try:
        await client.balancer.wait_for_endpoints(1)
        for _ in range(30):
            await fail(client, answer)
        await fail(client, "Internal")
        assert client.breaker.state is BreakerState.CLOSED
    finally:
        await client.close()


async def test_refused_connections_never_open_it(registry):
    refuser = InstanceInfo(
        service="echo", instance_id="refuser", host="127.0.0.1", grpc_port=free_port()
    )
    await registry.put(refuser)
    client = await connect_client(registry, "echo", echo_stub, policy=POLICY)
    try:
        await client.balancer.wait_for_endpoints(1)
        for _ in range(30):
            with pytest.raises(errors.Unavailable, match="failed to connect"):
                await client.call("Echo", echo_pb2.EchoRequest())
        assert client.breaker.state is BreakerState.CLOSED
        assert calls_to(client, "refuser") == 30
    finally:
        await client.close()
