"""Two echo instances on the test's nats-server, and a client balanced over both."""

import pytest

from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from cellwork.testing.echo import create_service, echo_stub


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
