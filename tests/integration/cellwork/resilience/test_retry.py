"""Retries over real instances: on another endpoint, idempotent calls only once a server
was reached, and a call cut by a server killed mid-call."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request

import pytest

from cellwork import errors
from cellwork.discovery import InstanceInfo
from cellwork.rpc.client import connect_client
from cellwork.runtime.nats_server import free_port
from cellwork.testing.echo import echo_stub
from cellwork.testing.v1 import echo_pb2
from tests.integration.cellwork.echoes import calls_to, metric
from tests.waiting import BOUND, wait_until

RETRIES = "cellwork_rpc_client_retries_total"


async def test_a_retried_idempotent_call_lands_on_another_endpoint(registry, echoes):
    await echoes("ok")
    await echoes("down", failing_with=errors.Unavailable)
    # Round robin: every other first attempt goes to the failing instance.
    client = await connect_client(registry, "echo", echo_stub, balancing="round_robin")
    before = metric(RETRIES, service="echo", reason="unavailable")
    try:
        await client.balancer.wait_for_endpoints(2)
        for _ in range(20):
            reply = await client.call("Echo", echo_pb2.EchoRequest(), idempotent=True)
            assert reply.instance_id == "ok"
        # Five UNAVAILABLE answers in a row eject it; each of them was retried.
        assert calls_to(client, "down") == 5
        assert metric(RETRIES, service="echo", reason="unavailable") == before + 5
    finally:
        await client.close()


async def test_a_non_idempotent_call_that_reached_a_server_is_not_retried(registry, echoes):
    await echoes("a")
    await echoes("b")
    client = await connect_client(registry, "echo", echo_stub)

    def attempts() -> int:
        return calls_to(client, "a") + calls_to(client, "b")

    try:
        await client.balancer.wait_for_endpoints(2)
        request = echo_pb2.EchoRequest(payload=b"Unavailable")
        with pytest.raises(errors.Unavailable, match="echo raised Unavailable"):
            await client.call("Fail", request)
        assert attempts() == 1
        # Declared idempotent, it goes to the other endpoint, then none is left: it stops
        # at two attempts of the three it may make, one on each.
        a, b = calls_to(client, "a"), calls_to(client, "b")
        with pytest.raises(errors.Unavailable, match="echo raised Unavailable"):
            await client.call("Fail", request, idempotent=True)
        assert (calls_to(client, "a"), calls_to(client, "b")) == (a + 1, b + 1)
    finally:
        await client.close()


async def test_an_idempotent_call_cut_by_a_killed_server_is_made_again_on_another(
    registry, echoes, nats_server, tmp_path
):
    """grpc.aio reports the cut as UNAVAILABLE, details ``Stream removed (Socket
    closed)``: a connection reset, retried for idempotent calls only."""
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork",
        "serve",
        "cellwork.testing.echo",
        env={
            **os.environ,
            "CELLWORK_NATS_URL": nats_server.url,
            "CELLWORK_INSTANCE_ID": "doomed",
            "CELLWORK_HOST": "127.0.0.1",
            "CELLWORK_GRPC_PORT": "0",
            "CELLWORK_METRICS_PORT": "0",
            "CELLWORK_LOG_LEVEL": "warning",
            "CELLWORK_ECHO_DELAY_MS": "60000",
        },
        cwd=tmp_path,
    )
    client = await connect_client(registry, "echo", echo_stub)
    before = metric(RETRIES, service="echo", reason="connection_reset")
    try:
        await client.balancer.wait_for_endpoints(1, timeout=BOUND)
        record = next(e.info for e in client.balancer.endpoints)
        request = echo_pb2.EchoRequest(payload=b"x")
        safe = asyncio.create_task(client.call("Echo", request, timeout=BOUND, idempotent=True))
        unsafe = asyncio.create_task(client.call("Echo", request, timeout=BOUND, idempotent=False))

        def in_flight_there() -> bool:
            url = f"http://127.0.0.1:{record.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
            return 'cellwork_rpc_server_in_flight{method="Echo/Echo",service="echo"} 2.0' in text

        await wait_until(
            lambda: asyncio.to_thread(in_flight_there), "both calls to reach the server"
        )
        await echoes("spare")
        await client.balancer.wait_for_endpoints(2, timeout=BOUND)
        doomed.send_signal(signal.SIGKILL)
        assert (await safe).instance_id == "spare"
        with pytest.raises(errors.Unavailable, match="Stream removed"):
            await unsafe
        assert metric(RETRIES, service="echo", reason="connection_reset") == before + 1
        assert calls_to(client, "doomed") == 2 and calls_to(client, "spare") == 1
    finally:
        if doomed.returncode is None:
            doomed.kill()
        async with asyncio.timeout(BOUND):
            await doomed.wait()
        await client.close()


async def test_a_dependencys_refused_connection_passed_on_is_the_middle_instances_answer(
    registry, echoes
):
    """Two echo instances relay to a service whose only instance refuses connections.
    Each answers Unavailable: its answer reached it, so the caller does not retry it
    (not idempotent), ejects nothing, and its breaker counts it; the message does not
    pass on gRPC's words for the dependency's refused connection."""
    await registry.put(
        InstanceInfo(service="deep", instance_id="refuser", host="127.0.0.1", grpc_port=free_port())
    )
    middles = [await echoes(f"mid{i}", echo_relay_to="deep") for i in range(2)]
    for middle in middles:  # the middle instances' own clients know the refuser
        relay = middle._clients[0].balancer
        await wait_until(lambda relay=relay: relay.endpoints, "the relay to see deep")
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(2)
        request = echo_pb2.RelayRequest(inner=echo_pb2.EchoRequest())
        with pytest.raises(errors.Unavailable) as caught:
            await client.call("Relay", request)
        assert calls_to(client, "mid0") + calls_to(client, "mid1") == 1
        assert client.balancer.ejected_endpoints(time.monotonic()) == 0
        assert client.breaker.window() == (1, 1)
        assert "connect" not in caught.value.message.lower()
    finally:
        await client.close()
