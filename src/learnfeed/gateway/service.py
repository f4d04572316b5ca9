"""The gateway's composition root: clients of identity, catalog and feed; the app on 8080.

What it does when one of them fails (feed: the last known feed, stale; catalog: bare
items and ``partial``; identity: 503 on the auth routes, while feed reads, whose tokens
are checked here, go on) is wired below and told in README's learnfeed part.
"""

from __future__ import annotations

from collections.abc import Mapping

from cellwork import Client, Service, ServiceSettings
from cellwork.gateway import TokenBucketLimiter
from learnfeed import contract
from learnfeed.gateway.access import Access
from learnfeed.gateway.app import build_app
from learnfeed.gateway.feeds import FeedPages, FeedReader
from learnfeed.gateway.items import Items
from learnfeed.gateway.last_feeds import LastFeeds
from learnfeed.gateway.routes.auth import AuthRoutes
from learnfeed.gateway.routes.feed import FeedRoutes
from learnfeed.gateway.routes.follows import FollowRoutes
from learnfeed.gateway.routes.home import HomeRoutes
from learnfeed.gateway.routes.interactions import InteractionRoutes
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1.catalog_client import CatalogClient
from learnfeed.v1.feed_client import FeedClient
from learnfeed.v1.identity_client import IdentityClient

SERVICE_NAME = "gateway"


class Readiness:
    """Readiness: the instance serves (started, not draining) and each upstream service
    has at least one instance it knows of. Its clients keep their last-known endpoints
    while the registry is unreachable, so NATS going away fails none of these: it shows
    as degraded instead."""

    def __init__(self, service: Service, **clients: Client[object]) -> None:
        self.service = service
        self.clients = clients

    def __call__(self) -> Mapping[str, bool]:
        parts = {"serving": self.service.serving}
        parts.update({name: client.has_endpoints() for name, client in self.clients.items()})
        return parts


def create_service(settings: ServiceSettings) -> Service:
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    service.add_streams(
        *contract.streams(
            cfg.refresh_window, interactions_max_bytes=cfg.interactions_stream_max_bytes
        )
    )
    identity = service.client("identity", IdentityClient)
    catalog = service.client("catalog", CatalogClient)
    feed = service.client("feed", FeedClient)

    items = Items(
        catalog,
        cfg.catalog_cache_ttl,
        cfg.redis_url,
        max_bytes=cfg.gateway_items_cache_bytes,
        keep=cfg.gateway_items_cache,
        enrich_timeout=cfg.gateway_enrich_timeout,
        load_timeout=cfg.call_timeout,
    )
    reader = FeedReader(
        feed,
        cfg.refresh_window,
        keep=cfg.gateway_feed_cache,
        last=LastFeeds(cfg.gateway_last_feeds_bytes),
        max_bytes=cfg.gateway_feed_cache_bytes,
    )
    pages = FeedPages(reader, items)
    access = Access(
        cfg.jwt(),
        per_user=TokenBucketLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst),
        per_client=TokenBucketLimiter(cfg.auth_rate_limit_rps, cfg.auth_rate_limit_burst),
    )
    feed_routes = FeedRoutes(pages, items, access)
    app = build_app(
        access,
        [
            AuthRoutes(identity),
            feed_routes,
            HomeRoutes(identity, pages, cfg.part_deadline),
            InteractionRoutes(items, service.publisher),
            FollowRoutes(identity, catalog, feed),
        ],
        [feed_routes.serving_route()],
        Readiness(service, identity=identity, catalog=catalog, feed=feed),
        dependencies=service.dependencies,
        max_body_bytes=cfg.max_body_bytes,
        request_timeout=cfg.call_timeout,
    )
    service.add_http(app, cfg.gateway_port)
    service.subscribe(f"{contract.FEED_CHANGED_PREFIX}.*", reader.on_changed)
    service.on_reconnect(reader.forget_versions)
    service.on_stop(reader.close)  # refresh requests still in flight
    service.on_stop(items.close)
    return service
