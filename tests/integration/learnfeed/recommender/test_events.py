"""The recommender's periodic pass on a real nats-server: one ranking request per user,
however many instances run it."""

import asyncio

from cellwork.data import open_engine, sqlite_url
from cellwork.events import Publisher, ensure_streams
from cellwork.events.connection import connect_nats
from learnfeed import contract
from learnfeed.recommender.events import recompute_all
from learnfeed.recommender.store import RecommenderStore


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
