"""Durable consumers on a real nats-server: consumer groups, retries that outlast a
dependency's outage, poison dead-lettered at once, in-progress heartbeats, timeouts,
and a durable re-created after NATS comes back without its store."""

import asyncio
import shutil

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY

from cellwork import Unavailable
from cellwork.events import DEAD_LETTER_STREAM, Consumer, Delivery, Poison, Publisher
from cellwork.events.connection import connect_nats
from cellwork.events.deadletters import list_dead_letters
from cellwork.events.streams import DEAD_LETTERS
from cellwork.testing import NatsServer
from tests.integration.cellwork.events.conftest import ORDERS
from tests.waiting import BOUND, wait_until

# Back-off of a few milliseconds: a test sees many deliveries in well under a second.
FAST = {"retry_base": 0.005, "retry_cap": 0.02}


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


async def test_the_durable_never_gives_up_on_a_message_by_itself(js) -> None:
    async def ok(d: Delivery) -> None:
        pass

    consumer = Consumer(js, stream="ORDERS", durable="forever", subject="orders.*", handler=ok)
    await consumer.start()
    await consumer.close()
    info = await js.consumer_info("ORDERS", "forever")
    assert info.config.max_deliver == -1


async def test_a_dependency_down_for_longer_than_five_deliveries_is_waited_out(js) -> None:
    attempts: list[int] = []

    async def call_dependency(d: Delivery) -> None:
        attempts.append(d.attempt)
        if len(attempts) <= 8:  # the old limit dead-lettered at the fifth
            raise Unavailable("identity: no endpoints")

    consumer = Consumer(
        js, stream="ORDERS", durable="patient", subject="orders.*", handler=call_dependency, **FAST
    )
    await consumer.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="blip-1")
    await wait_until(lambda: consumer.handled == 1, "the message handled once the dependency is up")
    await consumer.drain(BOUND)
    assert attempts == list(range(1, 10))
    assert consumer.dead_lettered == 0 and consumer.retried == 8
    assert await list_dead_letters(js) == []
    failed = REGISTRY.get_sample_value(
        "cellwork_events_failed_total",
        {"stream": "ORDERS", "durable": "patient", "kind": "transient"},
    )
    assert failed == 8


async def test_a_malformed_payload_is_dead_lettered_at_its_first_delivery(js) -> None:
    attempts: list[int] = []

    async def decode(d: Delivery) -> None:
        attempts.append(d.attempt)
        Timestamp.FromString(d.data)

    consumer = Consumer(
        js, stream="ORDERS", durable="decoder", subject="orders.*", handler=decode, **FAST
    )
    await consumer.start()
    await Publisher(js).publish("orders.bad", b"\xff\xff\xff", msg_id="bad-1")
    await wait_until(lambda: consumer.dead_lettered == 1, "the message to be dead-lettered")
    await consumer.drain(BOUND)
    assert attempts == [1]
    [letter] = await list_dead_letters(js)
    assert letter.data == b"\xff\xff\xff"
    assert (letter.subject, letter.stream, letter.durable) == ("orders.bad", "ORDERS", "decoder")
    assert letter.reason == "poison" and letter.deliveries == 1
    assert "DecodeError" in letter.error
    assert letter.original_msg_id == "bad-1" and letter.first_seen > 0
    dead = await js.get_last_msg(DEAD_LETTER_STREAM, "deadletter.ORDERS.decoder")
    assert dead.headers["Cellwork-Sequence"] == "1"
    assert dead.headers["Nats-Msg-Id"] == "decoder:ORDERS:1"


async def test_a_handler_that_raises_poison_is_dead_lettered_at_once(js) -> None:
    async def refuse(d: Delivery) -> None:
        raise Poison("no user_id")

    consumer = Consumer(js, stream="ORDERS", durable="refuser", subject="orders.*", handler=refuse)
    await consumer.start()
    await Publisher(js).publish("orders.new", b"{}", msg_id="p-1")
    await wait_until(lambda: consumer.dead_lettered == 1, "the message to be dead-lettered")
    await consumer.drain(BOUND)
    [letter] = await list_dead_letters(js)
    assert letter.reason == "poison" and "no user_id" in letter.error


async def test_transient_failures_past_the_max_age_are_dead_lettered_as_exhausted(js) -> None:
    attempts: list[int] = []

    async def always_down(d: Delivery) -> None:
        attempts.append(d.attempt)
        raise Unavailable("catalog: deadline exceeded")

    consumer = Consumer(
        js,
        stream="ORDERS",
        durable="exhausted",
        subject="orders.*",
        handler=always_down,
        retry_max_age=0.5,
        **FAST,
    )
    await consumer.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="old-1")
    await wait_until(lambda: consumer.dead_lettered == 1, "the message to be dead-lettered")
    await consumer.drain(BOUND)
    [letter] = await list_dead_letters(js)
    assert letter.reason == "transient_exhausted"
    assert "deadline exceeded" in letter.error
    assert letter.deliveries == len(attempts) >= 10
    assert letter.dead_lettered_at - letter.first_seen >= 0.5


async def test_a_dead_letter_the_stream_refuses_is_kept_and_dead_lettered_later(js) -> None:
    await js.delete_stream(DEAD_LETTER_STREAM)
    attempts: list[int] = []

    async def refuse(d: Delivery) -> None:
        attempts.append(d.attempt)
        raise Poison("bad")

    consumer = Consumer(
        js, stream="ORDERS", durable="kept", subject="orders.*", handler=refuse, **FAST
    )
    await consumer.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="k-1")
    await wait_until(lambda: len(attempts) >= 2, "the message delivered again")
    assert consumer.dead_lettered == 0
    await js.add_stream(DEAD_LETTERS.config())
    await wait_until(lambda: consumer.dead_lettered == 1, "the message to be dead-lettered")
    await consumer.drain(BOUND)
    [letter] = await list_dead_letters(js)
    assert letter.deliveries >= 2


async def test_a_handler_longer_than_ack_wait_is_not_redelivered_meanwhile(js) -> None:
    loop = asyncio.get_running_loop()
    runs: list[str] = []

    def slow(name: str):
        async def handle(d: Delivery) -> None:
            runs.append(name)
            # The time passing is what is tested: three ack waits, with no ack.
            until = loop.time() + 3.0
            await wait_until(lambda: loop.time() >= until, "three ack waits to pass")

        return handle

    consumers = [
        Consumer(
            js,
            stream="ORDERS",
            durable="heartbeat",
            subject="orders.*",
            handler=slow(name),
            ack_wait=1.0,
        )
        for name in ("a", "b")
    ]
    for c in consumers:
        await c.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="long-1")
    await wait_until(lambda: sum(c.handled for c in consumers) == 1, "the long run to finish")
    for c in consumers:
        await c.drain(BOUND)
    info = await js.consumer_info("ORDERS", "heartbeat")
    assert len(runs) == 1
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_a_handler_past_its_timeout_is_retried(js) -> None:
    attempts: list[int] = []
    never = asyncio.Event()

    async def hangs_once(d: Delivery) -> None:
        attempts.append(d.attempt)
        if d.attempt == 1:
            await never.wait()

    consumer = Consumer(
        js,
        stream="ORDERS",
        durable="timed",
        subject="orders.*",
        handler=hangs_once,
        handler_timeout=0.3,
        **FAST,
    )
    await consumer.start()
    await Publisher(js).publish("orders.new", b"x", msg_id="t-1")
    await wait_until(lambda: consumer.handled == 1, "the second delivery to succeed")
    await consumer.drain(BOUND)
    assert attempts == [1, 2] and consumer.dead_lettered == 0


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
    await first.close()  # stopped mid-work: nothing was acked
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


async def _ensure_orders(js: JetStreamContext) -> bool:
    """What a service does on reconnect: the streams again (False until JetStream answers)."""
    try:
        await js.add_stream(DEAD_LETTERS.config())
        await js.add_stream(ORDERS.config())
    except Exception:
        return False
    return True


async def test_the_consumer_resumes_after_nats_restarts_with_an_empty_store(
    nats_server: NatsServer,
) -> None:
    nc = await connect_nats(nats_server.url, name="test-restart")
    js = nc.jetstream()
    await wait_until(lambda: _ensure_orders(js), "the streams")
    seen: list[bytes] = []

    async def record(d: Delivery) -> None:
        seen.append(d.data)

    consumer = Consumer(js, stream="ORDERS", durable="survivor", subject="orders.*", handler=record)
    await consumer.start()
    try:
        publisher = Publisher(js)
        await publisher.publish("orders.new", b"before", msg_id="r-1")
        await wait_until(lambda: seen == [b"before"], "the first message")

        nats_server.stop()
        shutil.rmtree(nats_server.store_dir / "jetstream")
        nats_server.start()  # the same port: the client reconnects by itself
        await wait_until(lambda: nc.is_connected, "the client to reconnect")
        await wait_until(lambda: _ensure_orders(js), "the streams again")

        await wait_until(lambda: consumer.recreated == 1, "the durable re-created")
        await publisher.publish("orders.new", b"after", msg_id="r-2")
        await wait_until(lambda: seen == [b"before", b"after"], "the message after the restart")
        info = await js.consumer_info("ORDERS", "survivor")
        assert info.config.max_deliver == -1
    finally:
        await consumer.drain(BOUND)
        await nc.close()


async def test_a_consumer_never_holds_more_messages_than_its_limit_lets_it_run(js) -> None:
    started = 0
    release = asyncio.Event()

    async def held(d: Delivery) -> None:
        nonlocal started
        started += 1
        await release.wait()

    consumer = Consumer(
        js, stream="ORDERS", durable="bounded", subject="orders.*", handler=held, concurrency=8
    )
    publisher = Publisher(js)
    for n in range(50):
        await publisher.publish("orders.new", str(n).encode(), msg_id=f"bounded-{n}")
    await consumer.start()
    try:
        await wait_until(lambda: started == 8, "the limit's worth of handlers to start")
        assert consumer.in_flight == consumer.concurrency_limit == 8
        info = await js.consumer_info("ORDERS", "bounded")
        assert info.num_ack_pending == 8  # fetched: exactly what runs, none waiting here
        metrics = {
            name: REGISTRY.get_sample_value(name, {"stream": "ORDERS", "durable": "bounded"})
            for name in ("cellwork_events_concurrency_limit", "cellwork_events_in_flight")
        }
        assert metrics == {
            "cellwork_events_concurrency_limit": 8.0,
            "cellwork_events_in_flight": 8.0,
        }
        release.set()
        await wait_until(lambda: consumer.handled == 50, "every message handled")
        assert consumer.in_flight == 0
    finally:
        release.set()
        await consumer.drain(BOUND)


async def test_handlers_slowing_down_together_lower_the_concurrency_below_its_bound(js) -> None:
    slow = asyncio.Event()

    async def handle(d: Delivery) -> None:
        # 20 ms each at first; then ten times that, as when a dependency queues the work.
        await asyncio.sleep(0.2 if slow.is_set() else 0.02)

    consumer = Consumer(
        js, stream="ORDERS", durable="adapting", subject="orders.*", handler=handle, concurrency=16
    )
    publisher = Publisher(js)
    # 16 at a time, 20 ms each: at least 1.4 s of work, enough windows for the limit to
    # learn the usual latency.
    for n in range(1200):
        await publisher.publish("orders.new", b"x", msg_id=f"adapting-{n}")
    await consumer.start()
    try:
        await wait_until(lambda: consumer.handled >= 1100, "the quick messages to be handled")
        assert consumer.concurrency_limit == 16  # steady latency: the bound holds
        slow.set()
        for n in range(1200, 1800):
            await publisher.publish("orders.new", b"x", msg_id=f"adapting-{n}")
        await wait_until(lambda: consumer.concurrency_limit < 12, "the limit to come down")
    finally:
        await consumer.close()


async def test_a_limit_that_came_down_during_a_fetch_sends_the_extra_messages_back(js) -> None:
    running, most = 0, 0

    async def handle(d: Delivery) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)  # others could start meanwhile, if they had a slot
        running -= 1

    consumer = Consumer(
        js, stream="ORDERS", durable="shrunk", subject="orders.*", handler=handle, concurrency=4
    )
    publisher = Publisher(js)
    for n in range(4):
        await publisher.publish("orders.new", str(n).encode(), msg_id=f"shrunk-{n}")
    await consumer.start()
    limiter = consumer._limiter
    fetch = consumer._sub.fetch
    shrunk = False

    async def fetch_while_the_limit_comes_down(*args, **kwargs):
        # The consumer asked for 4 (its free slots); while the fetch is out, a window
        # closes and takes the limit down to 1, as a handler's release can.
        nonlocal shrunk
        if not shrunk:
            shrunk = True
            limiter.adaptive.limit = 1
        return await fetch(*args, **kwargs)

    consumer._sub.fetch = fetch_while_the_limit_comes_down
    try:
        await wait_until(lambda: consumer.handled == 4, "every message handled")
        assert shrunk
        assert consumer.in_flight == 0  # no slot released that was not taken
        assert most == 1  # never more handlers at once than the limit
        assert limiter.shed >= 3  # the three over it went back for redelivery
    finally:
        await consumer.drain(BOUND)
