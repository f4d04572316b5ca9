"""The recommender's events on a real nats-server: one ranking request per user however
many instances run the periodic pass; malformed interactions dead-lettered at once, and
an interaction delivered twice counted once."""

import asyncio

from cellwork.data import open_engine, sqlite_url
from cellwork.events import Consumer, Publisher, ensure_streams
from cellwork.events.connection import connect_nats
from cellwork.events.deadletters import list_dead_letters
from learnfeed import contract
from learnfeed.recommender.events import InteractionRecorder, recompute_all
from learnfeed.recommender.store import RecommenderStore
from learnfeed.v1 import events_pb2
from tests.waiting import BOUND, wait_until


async def test_the_periodic_pass_asks_once_per_user_in_batches(tmp_path, nats_server) -> None:
    engine = open_engine(sqlite_url(tmp_path, "recommender"))
    store = RecommenderStore(engine)
    await store.migrate()
    for n in range(450):
        await store.mark_ranked(f"u{n:04d}")
    nc = await connect_nats(nats_server.url, name="test-pass")
    try:
        js = nc.jetstream()
        await ensure_streams(js, contract.streams(10.0, interactions_max_bytes=-1))
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


async def test_a_malformed_interaction_is_dead_lettered_at_once_and_a_repeat_counts_once(
    tmp_path, nats_server
) -> None:
    engine = open_engine(sqlite_url(tmp_path, "recommender"))
    store = RecommenderStore(engine)
    await store.migrate()
    nc = await connect_nats(nats_server.url, name="test-recorder")
    consumer = None
    try:
        js = nc.jetstream()
        await ensure_streams(js, contract.streams(10.0, interactions_max_bytes=1 << 20))
        consumer = Consumer(
            js,
            stream=contract.INTERACTIONS_STREAM,
            durable="recommender-interactions",
            subject=f"{contract.INTERACTION_PREFIX}.*",
            handler=InteractionRecorder(store),
        )
        await consumer.start()
        publisher = Publisher(js)
        like = events_pb2.Interaction(user_id="u1", item_id="l1", kind="like", at=1.0)
        await publisher.publish("interaction.like", b"\x0a\xff", msg_id="bad-bytes")
        await publisher.publish(
            "interaction.like",
            events_pb2.Interaction(item_id="l1", kind="like").SerializeToString(),
            msg_id="no-user",
        )
        await publisher.publish(
            "interaction.wave",
            events_pb2.Interaction(user_id="u1", item_id="l1", kind="wave").SerializeToString(),
            msg_id="unknown-kind",
        )
        # the same event twice (a producer's retry past the dedupe window, or a replay)
        await publisher.publish("interaction.like", like.SerializeToString(), msg_id="ev-1")
        await js.publish(
            "interaction.like",
            like.SerializeToString(),
            headers={"Nats-Msg-Id": "replay:x", "Cellwork-Replay-Of": "ev-1"},
        )
        await wait_until(lambda: consumer.dead_lettered + consumer.handled == 5, "five events")
        letters = await list_dead_letters(js)
        assert [(d.reason, d.deliveries, d.original_msg_id) for d in letters] == [
            ("poison", 1, "bad-bytes"),
            ("poison", 1, "no-user"),
            ("poison", 1, "unknown-kind"),
        ]
        assert await store.interactions("u1") == [("l1", "like", 1.0)]
    finally:
        if consumer is not None:
            await consumer.drain(BOUND)
        await nc.close()
        await engine.dispose()
