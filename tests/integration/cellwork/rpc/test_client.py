"""A caller's declared fallback answers for the callee's failures, never for its answers."""

from __future__ import annotations

import pytest

from cellwork import NotFound
from cellwork.errors import CellworkError, Unavailable
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
