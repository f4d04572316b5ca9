"""The outbox on SQLite and PostgreSQL with a real nats-server: rows written in a
transaction go out once, in order, through outages and after their writer died."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cellwork.data import migrate, write_transaction
from cellwork.events import OUTBOX_MIGRATIONS, OUTBOX_OWNER, Outbox
from cellwork.events.connection import connect_nats
from cellwork.events.publisher import MSG_ID_HEADER
from cellwork.testing import NatsServer
from tests.waiting import wait_until

# ``engine`` (tests/integration/conftest.py): a fresh SQLite file, a fresh PostgreSQL
# database; ``js`` (conftest.py here): the ORDERS stream on ``nats_server``.


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await connect_nats(nats_server.url, name="test-outbox")
    yield client
    await client.close()


@pytest_asyncio.fixture
async def migrated(engine: AsyncEngine) -> AsyncEngine:
    await migrate(engine, OUTBOX_MIGRATIONS, service=OUTBOX_OWNER)
    return engine


def outbox_of(engine: AsyncEngine, writer: str = "orders-1", **options: object) -> Outbox:
    source = f"orders-{uuid.uuid4().hex[:8]}"  # a metric label of its own per test
    return Outbox(engine, source=source, writer=writer, **options)  # type: ignore[arg-type]


async def add_orders(outbox: Outbox, numbers: range) -> list[int]:
    async def work(conn: AsyncConnection) -> list[int]:
        return [
            await outbox.add(conn, "orders.placed", str(n).encode(), msg_id=f"placed-{n}")
            for n in numbers
        ]

    return await write_transaction(outbox.engine, work)


async def stored(js: JetStreamContext) -> list[bytes]:
    count = (await js.stream_info("ORDERS")).state.messages
    return [(await js.get_msg("ORDERS", seq)).data or b"" for seq in range(1, count + 1)]


def pending_metric(outbox: Outbox) -> float | None:
    return REGISTRY.get_sample_value("cellwork_outbox_pending", {"service": outbox.source})


async def test_rows_are_relayed_once_in_order_then_deleted(migrated, js, nc) -> None:
    outbox = outbox_of(migrated)
    heard: list[bytes] = []

    async def hear(msg: object) -> None:
        heard.append(msg.data)  # type: ignore[attr-defined]

    await nc.subscribe("_announce.orders", cb=hear)
    await nc.flush()
    outbox.start(nc)
    try:
        first = await add_orders(outbox, range(0, 20))

        async def with_broadcast(conn: AsyncConnection) -> list[int]:
            return [
                await outbox.add_broadcast(conn, "_announce.orders", b"20"),
                await outbox.add(conn, "orders.placed", b"20", msg_id="placed-20"),
            ]

        second = await write_transaction(migrated, with_broadcast)
        assert await outbox.sent(first + second, timeout=10)
        assert await stored(js) == [str(n).encode() for n in range(21)]
        await wait_until(lambda: heard == [b"20"], "the broadcast to be heard")
        assert (await outbox.backlog()).pending == 0
        assert outbox.relayed == 22
    finally:
        await outbox.close()


async def test_rows_wait_through_a_nats_outage_then_go(migrated, js, nc, nats_server) -> None:
    outbox = outbox_of(migrated, poll_interval=0.2)
    outbox.start(nc)
    try:
        nats_server.stop()
        await wait_until(lambda: not nc.is_connected, "the client to see the outage")
        ids = await add_orders(outbox, range(5))
        started = time.monotonic()
        assert not await outbox.sent(ids, timeout=10)  # NATS is down: answers at once
        assert time.monotonic() - started < 5
        await wait_until(lambda: pending_metric(outbox) == 5, "the metric to count 5 rows")
        assert (await outbox.backlog()).pending == 5

        nats_server.start()
        await wait_until(lambda: pending_metric(outbox) == 0, "the rows to go out", timeout=30)
        assert await stored(js) == [str(n).encode() for n in range(5)]
    finally:
        await outbox.close()


async def test_rows_left_by_a_dead_writer_are_published_once_by_another(migrated, js, nc) -> None:
    dead = outbox_of(migrated, writer="orders-1")  # never started: it died after commit
    await add_orders(dead, range(4))
    # It had sent the first row when it died, before deleting it: the stream has it.
    await js.publish("orders.placed", b"0", headers={MSG_ID_HEADER: "placed-0"})

    heir = Outbox(migrated, source=dead.source, writer="orders-2", orphan_after=0.3)
    heir.start(nc)
    try:
        await wait_until(
            lambda: pending_metric(heir) == 0 and heir.relayed == 4, "the heir to relay them"
        )
        assert await stored(js) == [b"0", b"1", b"2", b"3"]  # the resent first row deduped
    finally:
        await heir.close()


async def test_a_live_writers_fresh_rows_are_left_to_it(migrated, js, nc) -> None:
    writer = outbox_of(migrated, writer="orders-1")
    sibling = Outbox(migrated, source=writer.source, writer="orders-2", poll_interval=0.1)
    await add_orders(writer, range(3))
    sibling.start(nc)
    try:
        await wait_until(lambda: pending_metric(sibling) == 3, "the sibling to look")
        assert sibling.relayed == 0  # within orphan_after the rows are their writer's
        writer.start(nc)
        await wait_until(lambda: pending_metric(writer) == 0, "their writer to send them")
        assert await stored(js) == [b"0", b"1", b"2"]
    finally:
        await writer.close()
        await sibling.close()


async def test_the_schema_is_one_table_for_every_service_of_a_database(migrated) -> None:
    assert await migrate(migrated, OUTBOX_MIGRATIONS, service=OUTBOX_OWNER) == []
    async with migrated.connect() as conn:
        rows = await conn.execute(text("SELECT count(*) FROM cellwork_outbox"))
        assert rows.scalar_one() == 0


def test_an_outbox_needs_its_services_name_and_instance_id(tmp_path) -> None:
    from cellwork.data import open_engine, sqlite_url

    with pytest.raises(ValueError):
        Outbox(open_engine(sqlite_url(tmp_path, "x")), source="", writer="w")
