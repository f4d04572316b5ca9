"""The gateway's composition root: clients of identity, catalog and feed; the app on 8080."""

from __future__ import annotations

from cellwork import Service, ServiceSettings
from learnfeed import contract
from learnfeed.gateway.app import Gateway, build_app
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import catalog_pb2_grpc, feed_pb2_grpc, identity_pb2_grpc

SERVICE_NAME = "gateway"


def create_service(settings: ServiceSettings) -> Service:
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    service.add_streams(*contract.streams(cfg.refresh_window))
    gateway = Gateway(cfg, cfg.jwt())
    service.add_http(build_app(gateway), cfg.gateway_port)

    @service.on_start
    async def connect(svc: Service) -> None:
        gateway.up.identity = await svc.client("identity", identity_pb2_grpc.IdentityStub)
        gateway.up.catalog = await svc.client("catalog", catalog_pb2_grpc.CatalogStub)
        gateway.up.feed = await svc.client("feed", feed_pb2_grpc.FeedStub)
        gateway.feeds.feed = gateway.up.feed
        assert svc.nats is not None
        await svc.nats.subscribe(f"{contract.FEED_CHANGED_PREFIX}.*", cb=gateway.feeds.on_changed)
        assert svc.publisher is not None
        gateway.up.publisher = svc.publisher

    @service.on_reconnect
    async def forget_feed_versions(_: Service) -> None:
        gateway.feeds.versions.clear()

    @service.on_stop
    async def finish_refresh_requests(_: Service) -> None:
        await gateway.feeds.close()
        await gateway.items.close()

    return service
