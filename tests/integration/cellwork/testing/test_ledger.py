"""stream_copies reads a real stream: one id published twice under two sequences counts 2."""

import asyncio

import nats

from cellwork.events.streams import StreamSpec, ensure_streams
from cellwork.runtime.nats_server import NatsServer
from cellwork.testing.ledger import EventLedger, stream_copies


async def test_copies_are_counted_per_msg_id(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # The shortest dedupe window the server allows: a "b" sent after it is a second message.
        await ensure_streams(js, (StreamSpec("LEDGER", ("ledger.*",), duplicate_window=0.1),))
        await js.publish("ledger.x", b"1", headers={"Nats-Msg-Id": "a"})
        await js.publish("ledger.x", b"2", headers={"Nats-Msg-Id": "b"})
        await js.publish("ledger.x", b"2", headers={"Nats-Msg-Id": "a"})  # deduped
        await js.publish("ledger.y", b"3", headers={"Nats-Msg-Id": "c"})
        await asyncio.sleep(0.15)  # the window lapses: a time the server keeps, not a race
        await js.publish("ledger.x", b"2", headers={"Nats-Msg-Id": "b"})
    finally:
        await nc.close()
    copies = await stream_copies(nats_server.url, "LEDGER", "ledger.x")
    assert copies == {"a": 1, "b": 2}
    ledger = EventLedger()
    for event_id in ("a", "b", "c"):
        ledger.accept(event_id)
    report = ledger.reconcile(copies)
    assert report.lost == ("c",) and report.doubled == ("b",)
