"""The client: a caller's declared fallback answers for the callee's failures, never for
its answers; a live client takes a new policy without losing its state."""

from __future__ import annotations

import time

import pytest

from cellwork import CallPolicy, NotFound, Service
from cellwork.balancing import EjectionPolicy
from cellwork.errors import CellworkError, Internal, Unavailable
from cellwork.resilience import BreakerPolicy, BreakerState, RetryPolicy
from cellwork.rpc import balanced_client, connect_client
from cellwork.testing.v1 import echo_pb2
from cellwork.testing.v1.echo_client import EchoClient


async def test_fallback_answers_when_no_instance_serves() -> None:
    client = balanced_client(EchoClient, "echo")
    seen: list[CellworkError] = []

    async def stale(error: CellworkError) -> echo_pb2.EchoResponse:
        seen.append(error)
        return echo_pb2.EchoResponse(payload=b"from fallback")

    reply = await client.invoke(EchoClient.ECHO, echo_pb2.EchoRequest(payload=b"x"), fallback=stale)
    assert reply.payload == b"from fallback"
    assert len(seen) == 1 and isinstance(seen[0], Unavailable)
    await client.close()


async def test_without_fallback_the_failure_is_raised() -> None:
    client = balanced_client(EchoClient, "echo")
    with pytest.raises(Unavailable):
        await client.invoke(EchoClient.ECHO, echo_pb2.EchoRequest(payload=b"x"))
    await client.close()


async def test_fallback_does_not_hide_the_callees_answers(registry, two_echoes) -> None:
    client = await connect_client(registry, "echo", EchoClient, caller="test")
    await client.balancer.wait_for_endpoints(2)
    called: list[CellworkError] = []

    async def stale(error: CellworkError) -> echo_pb2.EchoResponse:
        called.append(error)
        return echo_pb2.EchoResponse()

    with pytest.raises(NotFound):
        await client.fail(echo_pb2.EchoRequest(payload=b"NotFound"), fallback=stale)
    answer = await client.fail(echo_pb2.EchoRequest(payload=b"Unavailable"), fallback=stale)
    assert answer == echo_pb2.EchoResponse()
    assert [type(error) for error in called] == [Unavailable]
    await client.close()


async def test_a_live_client_takes_a_new_policy_and_keeps_its_breaker_budget_and_ejections(
    registry, two_echoes
) -> None:
    client = await connect_client(
        registry,
        "echo",
        EchoClient,
        policy=CallPolicy(breaker=BreakerPolicy(min_calls=2, open_seconds=60)),
    )
    try:
        await client.balancer.wait_for_endpoints(2)
        ejected = client.balancer.endpoints[0]
        ejected.stats.eject(time.monotonic(), client.policy.ejection, draw=0.0)
        for _ in range(2):
            with pytest.raises(Internal):
                await client.fail(echo_pb2.EchoRequest(payload=b"Internal"))
        breaker = client.breaker
        assert breaker.state is BreakerState.OPEN
        tokens = client._resilience.budget.tokens
        client.apply(
            CallPolicy(
                timeout=2.0,
                max_in_flight=7,
                retry=RetryPolicy(budget_ratio=0.5),
                breaker=BreakerPolicy(min_calls=2, open_seconds=30),
            )
        )
        assert client.breaker is breaker and breaker.state is BreakerState.OPEN
        assert client._resilience.budget.tokens == tokens
        assert client._resilience.budget.ratio == 0.5
        assert client.policy.max_in_flight == 7
        assert ejected.stats.is_ejected(time.monotonic())
        assert ejected not in client.balancer._candidates
        with pytest.raises(Unavailable, match="circuit open"):
            await client.echo(echo_pb2.EchoRequest())
    finally:
        await client.close()


def test_a_services_clients_take_their_policy_from_its_options() -> None:
    service = Service("caller")
    policy = CallPolicy(timeout=1.5, max_in_flight=3)
    client = service.client("echo", EchoClient, policy=policy)
    assert client.policy == policy
    assert client.balancer.ejection == policy.ejection


def test_the_older_options_replace_their_fields_of_the_policy() -> None:
    client = balanced_client(
        EchoClient,
        "echo",
        policy=CallPolicy(max_in_flight=3),
        default_timeout=0.5,
        max_attempts=2,
        ejection=EjectionPolicy(consecutive_failures=2),
    )
    assert client.policy.timeout == 0.5 and client.policy.retry.max_attempts == 2
    assert client.policy.max_in_flight == 3
    assert client.balancer.ejection.consecutive_failures == 2
