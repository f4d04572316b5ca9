"""The stages of the call pipeline run in the documented order: deadline, retry, circuit
breaker, concurrency limit, fallback. Each step below would come out differently were
two stages the other way round."""

from __future__ import annotations

import asyncio

import pytest

from cellwork import CallPolicy, errors
from cellwork.resilience import BreakerPolicy, BreakerState
from cellwork.resilience.pipeline import PIPELINE
from cellwork.rpc.client import connect_client
from cellwork.rpc.context import reset_current_call, root_context, set_current_call
from cellwork.testing.echo import echo_stub
from cellwork.testing.v1 import echo_pb2
from tests.integration.cellwork.echoes import calls_to, metric
from tests.waiting import wait_until

UNAVAILABLE = echo_pb2.EchoRequest(payload=b"Unavailable")


def test_the_order_is_data():
    assert [stage.name for stage in PIPELINE] == ["deadline", "retry", "breaker", "limit"]


async def test_the_deadline_covers_every_attempt_of_a_retried_call(registry, echoes):
    """Deadline outside retry: a retry gets what is left of the call's time, not a new
    timeout of its own."""
    await echoes("down0", failing_with=errors.Unavailable)
    await echoes("down1", failing_with=errors.Unavailable)
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(2)
        request = echo_pb2.EchoRequest(delay_ms=600)  # answered UNAVAILABLE after 0.6 s
        with pytest.raises(errors.DeadlineExceeded):
            await client.call("Echo", request, timeout=1.0, idempotent=True)
        assert calls_to(client, "down0") == calls_to(client, "down1") == 1
    finally:
        await client.close()


async def test_the_stages_run_in_the_documented_order(registry, echoes):
    await echoes("a")
    await echoes("b")
    policy = CallPolicy(breaker=BreakerPolicy(min_calls=4, open_seconds=60), max_in_flight=1)
    client = await connect_client(registry, "echo", echo_stub, policy=policy)

    def attempts() -> int:
        return calls_to(client, "a") + calls_to(client, "b")

    def counted(name: str, **labels: str) -> float:
        return metric(name, service="echo", **labels)

    retries = counted("cellwork_rpc_client_retries_total", reason="unavailable")
    refused = {
        reason: counted("cellwork_rpc_client_rejected_total", reason=reason)
        for reason in ("breaker_open", "concurrency_limit")
    }
    slow = None
    try:
        await client.balancer.wait_for_endpoints(2)

        # deadline, before everything: a caller with less than the margin left gets
        # DeadlineExceeded, with no attempt and nothing counted by the breaker.
        token = set_current_call(root_context(timeout=0.003))
        try:
            with pytest.raises(errors.DeadlineExceeded, match="no time left"):
                await client.call("Echo", echo_pb2.EchoRequest())
        finally:
            reset_current_call(token)
        assert attempts() == 0 and client.breaker.window() == (0, 0)

        # limit, inside retry and breaker: one slow call holds the only slot; the next
        # is refused as Overloaded at once, neither retried nor counted by the breaker.
        slow = asyncio.create_task(
            client.call("Echo", echo_pb2.EchoRequest(delay_ms=60_000), timeout=120)
        )
        await wait_until(
            lambda: client._resilience.limit.in_flight == 1, "the slow call to hold the slot"
        )
        with pytest.raises(errors.Overloaded, match="in flight already"):
            await client.call("Fail", UNAVAILABLE, idempotent=True)
        assert attempts() == 1 and client.breaker.window() == (0, 0)
        assert counted("cellwork_rpc_client_retries_total", reason="unavailable") == retries

        # retry, outside the breaker: each attempt of a retried call is counted; and the
        # fallback, outermost, sees the error of the last attempt, after the retry.
        client.apply(policy.model_copy(update={"max_in_flight": 10}))
        seen: list[tuple[errors.CellworkError, int]] = []

        async def fallback(error: errors.CellworkError) -> echo_pb2.EchoResponse:
            seen.append((error, attempts()))
            return echo_pb2.EchoResponse(payload=b"fallback")

        reply = await client.call("Fail", UNAVAILABLE, idempotent=True, fallback=fallback)
        assert reply.payload == b"fallback"
        [(error, made)] = seen
        assert isinstance(error, errors.Unavailable) and "echo raised" in error.message
        assert made == 3  # the slow call's, and this call's two (one per endpoint)
        assert client.breaker.window() == (2, 2)
        assert counted("cellwork_rpc_client_retries_total", reason="unavailable") == retries + 1

        with pytest.raises(errors.Unavailable, match="echo raised"):
            await client.call("Fail", UNAVAILABLE, idempotent=True)
        assert client.breaker.state is BreakerState.OPEN  # 4 of 4 attempts failed

        # breaker, outside the limit and inside retry: with the limit full again, an open
        # circuit refuses first (the limit counts nothing), and its refusal is not retried.
        client.apply(policy)
        with pytest.raises(errors.Unavailable, match="circuit open"):
            await client.call("Echo", echo_pb2.EchoRequest(), idempotent=True)
        assert attempts() == 5
        assert counted("cellwork_rpc_client_retries_total", reason="unavailable") == retries + 2
        assert counted("cellwork_rpc_client_rejected_total", reason="breaker_open") == (
            refused["breaker_open"] + 1
        )
        assert counted("cellwork_rpc_client_rejected_total", reason="concurrency_limit") == (
            refused["concurrency_limit"] + 1
        )
    finally:
        if slow is not None:
            slow.cancel()
            await asyncio.gather(slow, return_exceptions=True)
        await client.close()
    assert client._resilience.limit.in_flight == 0
