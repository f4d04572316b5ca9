"""Events on a real nats-server: dedupe ids, consumer groups, redelivery, dead letters."""

import asyncio

import pytest

from cellwork import Overloaded
from cellwork.events import (
    DEAD_LETTER_STREAM,
    Consumer,
    Delivery,
    Publisher,
    StreamSpec,
    ensure_streams,
)
from cellwork.events.connection import connect_nats

SPEC = StreamSpec("ORDERS", ("orders.*",), duplicate_window=60)


@pytest.fixture
async def js(nats_server):
    nc = await connect_nats(nats_server.url, name="test-events")
    js = nc.jetstream()
    await ensure_streams(js, (SPEC,))
    yield js
    await nc.close()


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.02)


async def test_a_publish_retried_with_the_same_id_is_stored_once(js) -> None:
    publisher = Publisher(js)
    first = await publisher.publish("orders.new", b"1", msg_id="order-1")
    again = await publisher.publish("orders.new", b"1", msg_id="order-1")
    await publisher.publish("orders.new", b"2", msg_id="order-2")
    assert first == again
    assert (await js.stream_info("ORDERS")).state.messages == 2


async def test_queued_publishes_all_arrive_and_drain_flushes_them(js) -> None:
    publisher = Publisher(js, batch=32)
    publisher.start()
    for n in range(500):
        publisher.publish_soon("orders.new", str(n).encode(), msg_id=f"q-{n}")
    await publisher.drain(5)
    assert (await js.stream_info("ORDERS")).state.messages == 500
    assert publisher.failed == 0


async def test_a_full_queue_is_an_overload_with_the_publish_timeout_as_retry_after(js) -> None:
    publisher = Publisher(js, queue_size=2, timeout=3.0)  # not started: nothing drains it
    publisher.publish_soon("orders.new", b"1", msg_id="full-1")
    publisher.publish_soon("orders.new", b"2", msg_id="full-2")
    with pytest.raises(Overloaded) as full:
        publisher.publish_soon("orders.new", b"3", msg_id="full-3")
    assert full.value.retry_after == 3.0
    assert full.value.http_status == 503 and full.value.error_code == "overloaded"


async def test_instances_on_one_durable_share_the_work_each_message_once(js) -> None:
    seen: dict[str, list[bytes]] = {"a": [], "b": []}

    def handler(name: str):
        async def handle(d: Delivery) -> None:
            await asyncio.sleep(0.001)
            seen[name].append(d.data)

        return handle

    consumers = [
        Consumer(
            js, stream="ORDERS", durable="workers", subject="orders.*", handler=handler(n), batch=8
        )
        for n in ("a", "b")
    ]
    for c in consumers:
        await c.start()
    publisher = Publisher(js)
    for n in range(200):
        await publisher.publish("orders.new", str(n).encode(), msg_id=f"g-{n}")
    await wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= 200)
    await asyncio.sleep(0.3)
    for c in consumers:
        await c.drain(2)
    everything = seen["a"] + seen["b"]
    assert sorted(everything, key=int) == [str(n).encode() for n in range(200)]
    assert seen["a"] and seen["b"]


async def test_a_failing_handler_is_retried_then_dead_lettered(js) -> None:
    attempts: list[int] = []

    async def poison(d: Delivery) -> None:
        attempts.append(d.attempt)
        raise ValueError("cannot handle")

    consumer = Consumer(
        js, stream="ORDERS", durable="strict", subject="orders.*", handler=poison, max_deliver=3
    )
    await consumer.start()
    await Publisher(js).publish("orders.bad", b"poison", msg_id="bad-1")
    await wait_for(lambda: consumer.dead_lettered == 1, timeout=10)
    await consumer.drain(1)
    assert attempts == [1, 2, 3]
    dead = await js.get_last_msg(DEAD_LETTER_STREAM, "deadletter.ORDERS.strict")
    assert dead.data == b"poison"
    assert dead.headers["Cellwork-Subject"] == "orders.bad"
    assert "cannot handle" in dead.headers["Cellwork-Error"]


async def test_a_message_whose_work_did_not_finish_is_delivered_again(js) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[int] = []

    async def slow(d: Delivery) -> None:
        started.set()
        await release.wait()
        done.append(d.attempt)

    first = Consumer(
        js, stream="ORDERS", durable="slow", subject="orders.*", handler=slow, ack_wait=1.0
    )
    await first.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="slow-1")
    await asyncio.wait_for(started.wait(), 5)
    await first.close()  # killed mid-work: nothing was acked
    release.set()

    async def record(d: Delivery) -> None:
        done.append(d.attempt)

    second = Consumer(
        js, stream="ORDERS", durable="slow", subject="orders.*", handler=record, ack_wait=1.0
    )
    await second.start()
    await wait_for(lambda: done, timeout=5)
    await second.drain(1)
    assert done == [2]
