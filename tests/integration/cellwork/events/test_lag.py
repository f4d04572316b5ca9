"""Each durable's backlog and dead letters, as the server counts them."""

from cellwork.events import Consumer, Delivery, Poison, Publisher
from cellwork.events.lag import ConsumerLag, consumer_lag
from tests.waiting import BOUND, wait_until


async def test_lag_counts_pending_and_dead_letters_per_durable(js) -> None:
    async def refuse(d: Delivery) -> None:
        raise Poison("bad")

    refuser = Consumer(js, stream="ORDERS", durable="refuser", subject="orders.*", handler=refuse)
    await refuser.start()
    idle = Consumer(js, stream="ORDERS", durable="idle", subject="orders.*", handler=refuse)
    await idle.start()
    await idle.close()  # exists, fetches nothing: its backlog grows
    publisher = Publisher(js)
    for n in range(3):
        await publisher.publish("orders.new", b"x", msg_id=f"l-{n}")
    await wait_until(lambda: refuser.dead_lettered == 3, "three dead letters")
    await refuser.drain(BOUND)
    assert await consumer_lag(js) == [
        ConsumerLag("ORDERS", "idle", pending=3, in_flight=0, redelivered=0, dead_letters=0),
        ConsumerLag("ORDERS", "refuser", pending=0, in_flight=0, redelivered=0, dead_letters=3),
    ]
