"""recommender's composition root: database, ranker, consumers and jobs.

It serves no gRPC method of its own (health and reflection only): it is an event
worker, one of a consumer group (see ``events.py``).
"""

from __future__ import annotations

from cellwork import Service, ServiceSettings
from learnfeed import contract
from learnfeed.recommender.events import InteractionRecorder, RefreshRanker
from learnfeed.recommender.jobs import KeepIndex, PeriodicRecompute, WritePopularFeed
from learnfeed.recommender.ranker import Ranker
from learnfeed.recommender.store import MIGRATIONS, RecommenderStore
from learnfeed.retention import Prune
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1.catalog_client import CatalogClient
from learnfeed.v1.feed_client import FeedClient
from learnfeed.v1.identity_client import IdentityClient

SERVICE_NAME = "recommender"


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: database, ranker, consumers and periodic jobs."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    service.add_streams(
        *contract.streams(
            cfg.refresh_window, interactions_max_bytes=cfg.interactions_stream_max_bytes
        )
    )
    store = RecommenderStore(service.add_database(cfg.database(service.name), MIGRATIONS))
    catalog = service.client("catalog", CatalogClient)
    identity = service.client("identity", IdentityClient)
    feed = service.client("feed", FeedClient)
    ranker = Ranker(store, catalog, cfg.feed_size)

    service.add_consumer(
        RefreshRanker(ranker, identity, feed, store),
        stream=contract.FEED_STREAM,
        durable="recommender",
        subject=contract.REFRESH_REQUESTED,
        concurrency=8,
    )
    service.add_consumer(
        InteractionRecorder(store),
        stream=contract.INTERACTIONS_STREAM,
        durable="recommender-interactions",
        subject=f"{contract.INTERACTION_PREFIX}.*",
    )
    service.background(
        Prune(
            "interactions",
            store.prune_interactions,
            keep=cfg.interactions_retention,
            interval=cfg.retention_interval,
        )
    )
    service.background(KeepIndex(ranker))
    service.background(WritePopularFeed(ranker, feed))
    service.background(
        PeriodicRecompute(store, service.publisher, cfg.recompute_batch, cfg.recompute_interval)
    )
    return service
