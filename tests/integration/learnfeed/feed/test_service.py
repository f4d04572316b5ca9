"""learnfeed's stores and jobs on real SQLite files and a real nats-server."""

import asyncio

from grpc import aio

from cellwork.data import open_engine, sqlite_url
from cellwork.events import Publisher, ensure_streams
from cellwork.events.connection import connect_nats
from cellwork.testing import start_service
from learnfeed import contract
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.store import CatalogStore
from learnfeed.feed.service import create_service
from learnfeed.recommender.events import recompute_all
from learnfeed.recommender.store import RecommenderStore
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import feed_pb2, feed_pb2_grpc


def test_the_demo_catalog_is_deterministic() -> None:
    educators, items = demo_catalog()
    assert len(educators) == 50 and len(items) >= 5000
    assert demo_catalog()[1][1234] == items[1234]


async def test_catalog_instances_seeding_at_once_add_each_item_once(tmp_path) -> None:
    educators, items = demo_catalog()
    engine = open_engine(sqlite_url(tmp_path, "catalog"))
    store = CatalogStore(engine)
    await store.migrate()
    try:
        first, second = await asyncio.gather(
            store.seed(educators, items), store.seed(educators, items)
        )
        assert sorted([first, second]) == [0, len(items)]
    finally:
        await engine.dispose()


async def test_the_periodic_pass_asks_once_per_user_in_batches(tmp_path, nats_server) -> None:
    engine = open_engine(sqlite_url(tmp_path, "recommender"))
    store = RecommenderStore(engine)
    await store.migrate()
    for n in range(450):
        await store.mark_ranked(f"u{n:04d}")
    nc = await connect_nats(nats_server.url, name="test-pass")
    try:
        js = nc.jetstream()
        await ensure_streams(js, contract.streams(10.0))
        publisher = Publisher(js)
        # two instances running the same pass at once: the dedupe ids make it one
        done = await asyncio.gather(
            recompute_all(store, publisher, batch=200, interval=3600),
            recompute_all(store, publisher, batch=200, interval=3600),
        )
        assert done == [450, 450]
        info = await js.stream_info(contract.FEED_STREAM)
        assert info.state.messages == 450
    finally:
        await nc.close()
        await engine.dispose()


async def test_a_version_stored_by_one_feed_instance_is_read_by_its_sibling(
    tmp_path, nats_server
) -> None:
    feeds = [
        await start_service(
            create_service,
            nats_server.url,
            settings_class=LearnfeedSettings,
            state_dir=tmp_path,
            instance_id=f"feed-{n}",
        )
        for n in range(2)
    ]
    first, second = feeds
    try:
        # each instance talks to one of them directly: the balancer would hide which
        def stub_of(service):
            channel = aio.insecure_channel(service.info.address)
            return channel, feed_pb2_grpc.FeedStub(channel)

        ch1, one = stub_of(first)
        ch2, two = stub_of(second)
        put = feed_pb2.PutFeedRequest(
            user_id="u", items=[feed_pb2.FeedItem(item_id="i1", score=1.0)]
        )
        assert (await one.PutFeed(put)).version == 1
        assert (await two.GetFeed(feed_pb2.GetFeedRequest(user_id="u"))).version == 1  # cached
        assert (await two.PutFeed(put)).version == 2
        # The first instance had version 1 cached; the sibling's announcement drops it. It
        # travels on core NATS beside the gRPC answer, so it may land a moment after.
        async with asyncio.timeout(5):
            while (await one.GetFeed(feed_pb2.GetFeedRequest(user_id="u"))).version != 2:  # noqa: ASYNC110 - polling over gRPC
                await asyncio.sleep(0.01)
        await ch1.close()
        await ch2.close()
    finally:
        for feed in feeds:
            await feed.drain(1)
