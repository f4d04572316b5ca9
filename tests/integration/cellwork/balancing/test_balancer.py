"""The balancer over live instances: spread, latency awareness, ejection, membership."""

import asyncio
import collections
import time

import pytest

from cellwork.balancing import EjectionPolicy
from cellwork.discovery import InstanceInfo, InstanceStatus
from cellwork.rpc.client import connect_client
from cellwork.runtime.nats_server import free_port
from cellwork.testing import start_service
from cellwork.testing.echo import EchoSettings, create_service, echo_stub
from cellwork.testing.v1 import echo_pb2
from tests.waiting import BOUND, wait_until


async def spread(client, calls: int, concurrency: int = 8, idempotent=False):
    counts: collections.Counter[str] = collections.Counter()
    failures = 0
    queue = iter(range(calls))

    async def worker():
        nonlocal failures
        for _ in queue:
            try:
                reply = await client.call("Echo", echo_pb2.EchoRequest(), idempotent=idempotent)
                counts[reply.instance_id] += 1
            except Exception:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts, failures


@pytest.fixture
async def echoes(nats_server):
    started = []

    async def start(instance_id, **settings):
        service = await start_service(
            create_service,
            nats_server.url,
            settings_class=EchoSettings,
            instance_id=instance_id,
            **settings,
        )
        started.append(service)
        return service

    yield start
    for service in started:
        await service.close()


async def test_calls_spread_over_three_instances(registry, echoes):
    for i in range(3):
        await echoes(f"e{i}")
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(3)
        counts, failures = await spread(client, 600)
        assert failures == 0
        assert set(counts) == {"e0", "e1", "e2"}
        assert min(counts.values()) > 600 * 0.15, counts
    finally:
        await client.close()


async def test_most_traffic_shifts_away_from_an_instance_made_20ms_slower(registry, echoes):
    await echoes("fast0")
    await echoes("fast1")
    await echoes("slow", echo_delay_ms=20)
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(3)
        await spread(client, 100)  # learn latencies
        counts, failures = await spread(client, 900)
        assert failures == 0
        assert counts["slow"] < 900 * 0.10, counts
        assert counts["fast0"] > 900 * 0.3 and counts["fast1"] > 900 * 0.3, counts
    finally:
        await client.close()


async def test_an_instance_refusing_connections_is_ejected_and_no_call_fails(registry, echoes):
    await echoes("ok0")
    await echoes("ok1")
    dead = InstanceInfo(
        service="echo", instance_id="refuser", host="127.0.0.1", grpc_port=free_port()
    )
    await registry.put(dead)
    client = await connect_client(
        registry, "echo", echo_stub, ejection=EjectionPolicy(consecutive_failures=2)
    )
    try:
        await client.balancer.wait_for_endpoints(3)
        counts, failures = await spread(client, 300, idempotent=True)
        assert failures == 0
        assert counts["refuser"] == 0 and counts["ok0"] + counts["ok1"] == 300
        refuser = next(e for e in client.balancer.endpoints if e.info.instance_id == "refuser")
        assert refuser.stats.ejections >= 1
        assert refuser.stats.is_ejected(time.monotonic())
    finally:
        await client.close()


async def test_a_new_instance_gets_a_share_of_the_calls_once_registered(registry, echoes):
    await echoes("old")
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(1)
        await echoes("new")
        await client.balancer.wait_for_endpoints(2, timeout=BOUND)
        counts, failures = await spread(client, 200)
        assert failures == 0
        assert counts["new"] > 0 and counts["old"] > 0, counts
    finally:
        await client.close()


async def test_an_instance_whose_heartbeat_stops_leaves_the_balancer_and_gets_no_calls(
    registry, echoes
):
    await echoes("steady")
    ghost = await echoes("ghost")
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(2)
        # Silence the ghost's heartbeat while it still answers: no call will fail,
        # only the registry can tell the balancer it is gone (after its 3 s TTL).
        ghost.registration._task.cancel()
        await wait_until(
            lambda: not any(e.info.instance_id == "ghost" for e in client.balancer.endpoints),
            "the ghost to leave the balancer",
        )
        counts, failures = await spread(client, 100)
        assert failures == 0 and counts == {"steady": 100}
    finally:
        await client.close()


async def test_draining_instances_get_no_new_calls(registry, echoes):
    await echoes("stays")
    leaving = await echoes("leaving")
    client = await connect_client(registry, "echo", echo_stub)
    try:
        await client.balancer.wait_for_endpoints(2)
        await leaving.registration.set_status(InstanceStatus.DRAINING)

        def serving() -> list[str]:
            return [e.info.instance_id for e in client.balancer.endpoints if e.serving]

        await wait_until(lambda: serving() == ["stays"], "the balancer to see it draining")
        counts, failures = await spread(client, 100)
        assert failures == 0 and counts == {"stays": 100}
    finally:
        await client.close()
