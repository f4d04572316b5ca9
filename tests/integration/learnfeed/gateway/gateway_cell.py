"""A small cell for the gateway's tests: real services on the test's nats-server, the
gateway's HTTP door, tokens, and what the process's metrics say."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from grpc import aio
from prometheus_client import REGISTRY

from cellwork import Service, ServiceSettings
from cellwork.testing import free_port, start_service
from learnfeed.gateway.service import create_service as create_gateway
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import feed_pb2, feed_pb2_grpc

# The request's deadline, far above what any answer here should take: an answer that
# waited for a failed part until the deadline takes this long, one that did not, well
# under it.
CALL_TIMEOUT = 10.0


def sample(name: str, **labels: str) -> float:
    """A sample of this process's metrics (every service of the test shares them)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def put_version(feed: Service, user_id: str, item_ids: list[str]) -> int:
    """Store a ranked version for ``user_id`` straight on the feed instance."""
    async with aio.insecure_channel(feed.info.address) as channel:
        stub = feed_pb2_grpc.FeedStub(channel)
        reply = await stub.PutFeed(
            feed_pb2.PutFeedRequest(
                user_id=user_id,
                items=[
                    feed_pb2.FeedItem(item_id=item_id, score=1.0 - n / 64)
                    for n, item_id in enumerate(item_ids)
                ],
            )
        )
    return int(reply.version)


class Cell:
    """Services of one test, started in order and drained in reverse."""

    def __init__(self, nats_url: str, **settings: object) -> None:
        self.nats_url = nats_url
        self.settings = {"settings_class": LearnfeedSettings, "demo": True, **settings}
        self.services: list[Service] = []

    async def start(
        self, factory: Callable[[ServiceSettings], Service], **settings: object
    ) -> Service:
        service = await start_service(factory, self.nats_url, **{**self.settings, **settings})
        self.services.append(service)
        return service

    async def stop(self, service: Service) -> None:
        self.services.remove(service)
        await service.drain(1)

    async def close(self) -> None:
        for service in reversed(self.services):
            await service.drain(1)


async def gateway_of(cell: Cell, **settings: object) -> tuple[Service, httpx.AsyncClient]:
    port = free_port()
    gateway = await cell.start(
        create_gateway, gateway_port=port, call_timeout=CALL_TIMEOUT, **settings
    )
    return gateway, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {LearnfeedSettings(demo=True).jwt().issue(user_id)}"}


async def parts_ready(http: httpx.AsyncClient) -> dict[str, bool]:
    parts: dict[str, bool] = (await http.get("/readyz")).json()["parts"]
    return parts
