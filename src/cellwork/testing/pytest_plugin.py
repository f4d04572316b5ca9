"""pytest fixtures: a real ``nats-server`` per test, and a registry bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from cellwork.config.settings import ServiceSettings
from cellwork.discovery.registry import Registry
from cellwork.events.connection import connect_nats
from cellwork.runtime.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream (file storage) on a free port."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest_asyncio.fixture
async def registry(nats_server: NatsServer) -> AsyncIterator[Registry]:
    """The registry bucket on ``nats_server``, named and timed as services' settings say."""
    settings = ServiceSettings(nats_url=nats_server.url)
    nc = await connect_nats(nats_server.url, name="test-registry")
    try:
        yield await Registry.open(nc, settings.registry_bucket, settings.registry_ttl)
    finally:
        await nc.close()
