"""``cellwork dlq`` end to end: a real nats-server, a real consumer, the CLI as a user
runs it (a subprocess)."""

import asyncio
import json
import sys
from pathlib import Path

from cellwork.events import Consumer, Delivery, Poison, Publisher, ensure_streams
from cellwork.events.connection import connect_nats
from cellwork.events.deadletters import list_dead_letters
from cellwork.runtime.control import CellState
from cellwork.testing import NatsServer
from tests.integration.cellwork.events.conftest import ORDERS
from tests.waiting import BOUND, wait_until


async def cellwork(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": ""},
    )
    out, _ = await asyncio.wait_for(process.communicate(), BOUND)
    return int(process.returncode or 0), out.decode()


async def test_dlq_lists_replays_once_and_drops_dead_letters(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    CellState("t", nats_server.url, 0, str(tmp_path)).write(tmp_path)
    nc = await connect_nats(nats_server.url, name="test-dlq")
    js = nc.jetstream()
    await ensure_streams(js, (ORDERS,))
    broken = True
    handled: list[tuple[bytes, str]] = []

    async def handle(d: Delivery) -> None:
        if broken:
            raise Poison("bad order")
        handled.append((d.data, d.msg_id))

    consumer = Consumer(js, stream="ORDERS", durable="orders", subject="orders.*", handler=handle)
    await consumer.start()
    try:
        publisher = Publisher(js)
        await publisher.publish("orders.new", b"first", msg_id="o-1")
        await publisher.publish("orders.new", b"second", msg_id="o-2")
        await wait_until(lambda: consumer.dead_lettered == 2, "two dead letters")

        code, out = await cellwork("dlq", "list", "--state-dir", str(tmp_path), "--json")
        assert code == 0, out
        listed = json.loads(out)
        assert [(d["subject"], d["durable"], d["reason"]) for d in listed] == [
            ("orders.new", "orders", "poison")
        ] * 2
        assert "bad order" in listed[0]["error"]
        first, second = (d["seq"] for d in listed)

        code, out = await cellwork("dlq", "list", "--nats-url", nats_server.url)
        assert code == 0 and "orders.new" in out and "poison" in out, out

        broken = False
        code, out = await cellwork("dlq", "replay", str(first), "--nats-url", nats_server.url)
        assert code == 0 and f"replayed 1 dead letters: {first}" in out, out
        await wait_until(lambda: handled, "the replayed message")
        # handled once, under the original event's id
        assert handled == [(b"first", "o-1")]

        code, out = await cellwork("dlq", "replay", str(first), "--nats-url", nats_server.url)
        assert code == 1 and f"no dead letter {first}" in out and "Traceback" not in out
        assert [d.seq for d in await list_dead_letters(js)] == [second]

        code, out = await cellwork("dlq", "drop", "--all", "--nats-url", nats_server.url)
        assert code == 0 and f"dropped 1 dead letters: {second}" in out, out
        assert await list_dead_letters(js) == []
        assert handled == [(b"first", "o-1")]
        info = await js.consumer_info("ORDERS", "orders")
        assert info.num_pending == 0
    finally:
        await consumer.drain(BOUND)
        await nc.close()


async def test_dlq_says_why_when_there_is_no_cell_or_no_nats(tmp_path: Path) -> None:
    code, out = await cellwork("dlq", "list", "--state-dir", str(tmp_path))
    assert code == 1 and "no running cell" in out and "Traceback" not in out
    code, out = await cellwork("dlq", "drop", "3", "--nats-url", "nats://127.0.0.1:9")
    assert code == 1 and "NATS is not reachable" in out and "Traceback" not in out
    code, out = await cellwork("dlq", "replay", "--nats-url", "nats://127.0.0.1:9")
    assert code == 2 and "--all" in out
