"""Feed instances on a real nats-server, sharing one SQLite file: what one stores, its
sibling serves."""

from grpc import aio

from cellwork.testing import start_service
from learnfeed.feed.service import create_service
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import feed_pb2, feed_pb2_grpc
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
        await ch1.close()
        await ch2.close()
    finally:
        for feed in feeds:
            await feed.drain(1)
