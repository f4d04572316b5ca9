"""Publishing on a real nats-server: dedupe ids, the bounded queue, drain."""

import time

import pytest

from cellwork import Overloaded, Unavailable
from cellwork.events import Publisher
from cellwork.rpc.context import reset_current_call, root_context, set_current_call
from tests.waiting import wait_until


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
    await publisher.drain(30)
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


async def test_a_publish_while_nats_is_down_fails_at_once_with_a_retry_after(
    js, nats_server
) -> None:
    publisher = Publisher(js, timeout=5.0)
    nats_server.stop()
    await wait_until(lambda: not publisher.connected, "the client to see the outage")
    started = time.monotonic()
    with pytest.raises(Unavailable) as down:
        await publisher.publish("orders.new", b"1", msg_id="down-1")
    assert time.monotonic() - started < 3  # not the 5 s publish timeout
    assert down.value.retry_after is not None and down.value.retry_after > 0


async def test_a_publish_gets_no_more_time_than_the_call_has_left(js) -> None:
    publisher = Publisher(js, timeout=5.0)
    token = set_current_call(root_context(timeout=0.0))
    try:
        with pytest.raises(Unavailable):
            await publisher.publish("orders.new", b"1", msg_id="late-1")
    finally:
        reset_current_call(token)
    assert (await js.stream_info("ORDERS")).state.messages == 0
