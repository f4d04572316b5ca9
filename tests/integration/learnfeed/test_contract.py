"""learnfeed's streams as a real nats-server creates them: the INTERACTIONS stream is
capped by size as well as by age."""

from __future__ import annotations

from cellwork.events import ensure_streams
from cellwork.events.connection import connect_nats
from cellwork.runtime.nats_server import NatsServer
from learnfeed import contract


async def test_the_interactions_stream_drops_its_oldest_past_max_bytes(
    nats_server: NatsServer,
) -> None:
    cap = 64 * 1024
    nc = await connect_nats(nats_server.url, name="test-contract")
    try:
        js = nc.jetstream()
        await ensure_streams(js, contract.streams(10.0, interactions_max_bytes=cap))
        info = await js.stream_info(contract.INTERACTIONS_STREAM)
        assert info.config.max_bytes == cap
        assert info.config.max_age == contract.INTERACTIONS_MAX_AGE
        for n in range(200):
            await js.publish(contract.interaction("view"), bytes(1000), headers={"n": str(n)})
        info = await js.stream_info(contract.INTERACTIONS_STREAM)
        assert info.state.bytes <= cap
        assert 0 < info.state.messages < 200
        assert info.state.last_seq == 200  # the newest are kept, the oldest went
        assert info.state.first_seq > 1
        # Declaring the streams again (another instance starting) keeps the cap.
        await ensure_streams(js, contract.streams(10.0, interactions_max_bytes=cap))
        assert (await js.stream_info(contract.INTERACTIONS_STREAM)).config.max_bytes == cap
    finally:
        await nc.close()
