"""A JetStream context on the test's nats-server, with one ORDERS stream."""

from collections.abc import AsyncIterator

import pytest
from nats.js.client import JetStreamContext

from cellwork.events import StreamSpec, ensure_streams
from cellwork.events.connection import connect_nats
from cellwork.testing import NatsServer

ORDERS = StreamSpec("ORDERS", ("orders.*",), duplicate_window=60)


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await connect_nats(nats_server.url, name="test-events")
    js = nc.jetstream()
    await ensure_streams(js, (ORDERS,))
    yield js
    await nc.close()
