"""Feed instances on a real nats-server, sharing one SQLite file: what one stores, its
sibling serves; what one stores is announced from its outbox, once per refresh, even
when the instance died right after the commit."""

import grpc
import pytest
from grpc import aio

from cellwork.data import migrate, open_engine
from cellwork.discovery import InstanceInfo
from cellwork.events import OUTBOX_MIGRATIONS, OUTBOX_OWNER, Outbox
from cellwork.events.connection import connect_nats
from cellwork.runtime.nats_server import free_port
from cellwork.testing import start_service
from learnfeed import contract
from learnfeed.feed.events import Announcements
from learnfeed.feed.service import create_service
from learnfeed.feed.store import FeedStore
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import events_pb2, feed_pb2, feed_pb2_grpc
from tests.waiting import wait_until


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
        async def first_serves_version_2() -> bool:
            reply = await one.GetFeed(feed_pb2.GetFeedRequest(user_id="u"))
            return bool(reply.version == 2)

        await wait_until(first_serves_version_2, "the first instance to serve version 2")

        # Kept packed, served page by page, scores as stored (protobuf floats).
        ranked = [feed_pb2.FeedItem(item_id=f"i{n:02d}", score=1.0 - n / 64) for n in range(30)]
        await one.PutFeed(feed_pb2.PutFeedRequest(user_id="p", items=ranked))
        page = await one.GetFeed(feed_pb2.GetFeedRequest(user_id="p", offset=20, limit=20))
        assert page.total == 30
        assert [(i.item_id, i.score) for i in page.items] == [
            (i.item_id, i.score) for i in ranked[20:]
        ]
        bad = feed_pb2.PutFeedRequest(user_id="p", items=[feed_pb2.FeedItem(item_id="a\x1fb")])
        with pytest.raises(aio.AioRpcError) as refused:
            await one.PutFeed(bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await ch1.close()
        await ch2.close()
    finally:
        for feed in feeds:
            await feed.drain(1)


async def feed_ready_of(js, user_id: str) -> list[events_pb2.FeedReady]:
    """Every ``feed.ready.<user_id>`` the FEED stream holds, in order."""
    try:
        info = await js.stream_info(contract.FEED_STREAM)
    except Exception:
        return []
    found = []
    if info.state.messages == 0:  # an empty stream's first_seq is 0: no message has it
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(contract.FEED_STREAM, seq)
        if msg.subject == contract.feed_ready(user_id):
            found.append(events_pb2.FeedReady.FromString(msg.data))
    return found


async def test_a_refresh_applied_twice_stores_one_version_announced_once(
    tmp_path, nats_server
) -> None:
    feed = await start_service(
        create_service, nats_server.url, settings_class=LearnfeedSettings, state_dir=tmp_path
    )
    nc = await connect_nats(nats_server.url, name="test-feed")
    changed: list[bytes] = []

    async def hear(msg) -> None:
        changed.append(msg.data)

    await nc.subscribe(contract.feed_changed("u"), cb=hear)
    await nc.flush()
    channel = aio.insecure_channel(feed.info.address)
    try:
        stub = feed_pb2_grpc.FeedStub(channel)
        put = feed_pb2.PutFeedRequest(
            user_id="u",
            items=[feed_pb2.FeedItem(item_id="i1", score=1.0)],
            refresh_id="refresh.u.1",
            requested_at=123.0,
        )
        assert (await stub.PutFeed(put)).version == 1
        # PutFeed answers once its announcements went out: both are there already.
        ready = await feed_ready_of(nc.jetstream(), "u")
        assert [(r.version, r.requested_at) for r in ready] == [(1, 123.0)]
        await wait_until(lambda: len(changed) == 1, "feed.changed to be heard")

        again = await stub.PutFeed(put)  # a redelivered refresh
        assert again.version == 1
        other = feed_pb2.PutFeedRequest(user_id="u", refresh_id="refresh.u.2")
        assert (await stub.PutFeed(other)).version == 2
        reply = await stub.GetFeed(feed_pb2.GetFeedRequest(user_id="u"))
        assert (reply.version, reply.total) == (2, 0)
        ready = await feed_ready_of(nc.jetstream(), "u")
        assert [r.version for r in ready] == [1, 2]
        await wait_until(lambda: len(changed) == 2, "the second feed.changed to be heard")
    finally:
        await channel.close()
        await nc.close()
        await feed.drain(1)


async def test_a_version_committed_by_an_instance_that_died_is_announced_after_restart(
    tmp_path, nats_server
) -> None:
    # The instance commits a version and dies before its relay runs (in a cell, the
    # CELLWORK_TEST_EXIT_AT fault does it with os._exit): here, a relay never started.
    settings = LearnfeedSettings(state_dir=tmp_path, instance_id="feed-1")
    engine = open_engine(settings.database("feed"))
    store = FeedStore(engine)
    await store.migrate()
    await migrate(engine, OUTBOX_MIGRATIONS, service=OUTBOX_OWNER)
    announcements = Announcements(Outbox(engine, source="feed", writer="feed-1"), "feed-1")
    stored = await store.put_version(
        "u", [("i1", 1.0)], 10.0, refresh_id="r1", announce=announcements.of("u", 10.0, 0.0)
    )
    assert stored.new and len(stored.announcements) == 2

    nc = await connect_nats(nats_server.url, name="test-feed")
    js = nc.jetstream()
    restarted = await start_service(
        create_service,
        nats_server.url,
        settings_class=LearnfeedSettings,
        state_dir=tmp_path,
        instance_id="feed-1",
    )
    try:

        async def announced_once() -> bool:
            return [r.version for r in await feed_ready_of(js, "u")] == [1]

        await wait_until(announced_once, "the restarted instance to announce version 1")
        left = Outbox(engine, source="feed", writer="test")

        async def outbox_emptied() -> bool:
            return (await left.backlog()).pending == 0

        await wait_until(outbox_emptied, "the sent rows to be deleted")
        assert [r.version for r in await feed_ready_of(js, "u")] == [1]
    finally:
        await restarted.drain(1)
        await nc.close()
        await engine.dispose()


async def test_a_new_users_feed_is_the_popular_ranking_when_the_catalog_refuses(
    tmp_path, nats_server, registry
) -> None:
    """The cold start interleaves popular and recent items; recent ones come from the
    catalog. Its only instance refusing connections, feed answers what it holds."""
    await registry.put(
        InstanceInfo(
            service="catalog", instance_id="refuser", host="127.0.0.1", grpc_port=free_port()
        )
    )
    feed = await start_service(
        create_service,
        nats_server.url,
        settings_class=LearnfeedSettings,
        state_dir=tmp_path,
        instance_id="feed-0",
    )
    catalog = feed._clients[0].balancer
    await wait_until(lambda: catalog.endpoints, "feed's catalog client to see the refuser")
    channel = aio.insecure_channel(feed.info.address)
    try:
        stub = feed_pb2_grpc.FeedStub(channel)
        popular = [feed_pb2.FeedItem(item_id=f"p{n}", score=1.0 - n / 10) for n in range(3)]
        await stub.PutFeed(feed_pb2.PutFeedRequest(user_id=contract.POPULAR_FEED, items=popular))
        page = await stub.GetFeed(feed_pb2.GetFeedRequest(user_id="new-user"))
        assert [i.item_id for i in page.items] == ["p0", "p1", "p2"]
        assert page.version == 0 and page.stale
    finally:
        await channel.close()
        await feed.drain(1)
