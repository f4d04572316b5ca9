"""Durable consumers on a real nats-server: consumer groups, redelivery, dead letters."""

import asyncio

from cellwork.events import DEAD_LETTER_STREAM, Consumer, Delivery, Publisher
from tests.waiting import BOUND, wait_until


async def test_instances_on_one_durable_share_the_work_each_message_once(js) -> None:
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def handler(name: str, other: str):
        async def handle(d: Delivery) -> None:
            seen[name].append(d.data)
            started[name].set()
            # Hold the first messages until the other instance has one too: it can only
            # get one while this one is busy if the durable hands work to both.
            await asyncio.wait_for(started[other].wait(), BOUND)

        return handle

    consumers = [
        Consumer(
            js,
            stream="ORDERS",
            durable="workers",
            subject="orders.*",
            handler=handler(name, other),
            batch=8,
        )
        for name, other in (("a", "b"), ("b", "a"))
    ]
    for c in consumers:
        await c.start()
    publisher = Publisher(js)
    for n in range(200):
        await publisher.publish("orders.new", str(n).encode(), msg_id=f"g-{n}")
    await wait_until(lambda: len(seen["a"]) + len(seen["b"]) >= 200, "200 deliveries")
    for c in consumers:
        await c.drain(BOUND)

    # The server's own count: every message delivered once and acked, none redelivered
    # (a redelivery would come after ack_wait, long after this; the server knows now).
    async def all_acked() -> bool:
        info = await js.consumer_info("ORDERS", "workers")
        return bool(info.num_ack_pending == 0)

    await wait_until(all_acked, "every delivery acked")
    info = await js.consumer_info("ORDERS", "workers")
    assert info.delivered.stream_seq == 200 and info.num_redelivered == 0
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
    await wait_until(lambda: consumer.dead_lettered == 1, "the message to be dead-lettered")
    await consumer.drain(BOUND)
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
    await asyncio.wait_for(started.wait(), BOUND)
    await first.close()  # killed mid-work: nothing was acked
    release.set()

    async def record(d: Delivery) -> None:
        done.append(d.attempt)

    second = Consumer(
        js, stream="ORDERS", durable="slow", subject="orders.*", handler=record, ack_wait=1.0
    )
    await second.start()
    await wait_until(lambda: done, "the message to be delivered again")
    await second.drain(BOUND)
    assert done == [2]
