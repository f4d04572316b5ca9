"""Core-NATS fan-out on a real nats-server: declared before attach, made on attach,
confirmed before the first message, gone after unsubscribe."""

from __future__ import annotations

import asyncio

import pytest

from cellwork import Unavailable
from cellwork.events import Fanout, connect_nats


class Inbox:
    """A handler that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    async def __call__(self, subject: str, data: bytes) -> None:
        self.messages.append((subject, data))
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def connections(nats_server):
    listener = await connect_nats(nats_server.url, "test-fanout-listener")
    speaker = await connect_nats(nats_server.url, "test-fanout-speaker")
    yield listener, speaker
    await listener.close()
    await speaker.close()


async def test_a_subscription_declared_before_attach_is_made_on_attach(connections):
    listener, speaker = connections
    bus, inbox = Fanout(), Inbox()
    subscription = bus.subscribe("news.*", inbox)
    with pytest.raises(Unavailable):
        await subscription.confirmed()  # not attached yet

    await bus.attach(listener)
    await subscription.confirmed()
    await speaker.publish("news.sport", b"goal")
    await inbox.wait_for(1)
    assert inbox.messages == [("news.sport", b"goal")]
    await bus.close()


async def test_a_broadcast_reaches_every_attached_bus(connections):
    listener, speaker = connections
    hearing, telling, inbox = Fanout(), Fanout(), Inbox()
    await hearing.attach(listener)
    await telling.attach(speaker)
    await hearing.subscribe("news.>", inbox).confirmed()

    await telling.broadcast("news.a.b", b"1", confirm=True)
    await inbox.wait_for(1)
    assert inbox.messages == [("news.a.b", b"1")]
    await hearing.close()
    await telling.close()


async def test_a_broadcast_before_attach_is_refused():
    with pytest.raises(Unavailable):
        await Fanout().broadcast("news.x", b"")


async def test_after_unsubscribe_nothing_more_arrives(connections):
    listener, speaker = connections
    bus, gone, staying = Fanout(), Inbox(), Inbox()
    await bus.attach(listener)
    left = bus.subscribe("news.left", gone)
    await left.confirmed()
    await bus.subscribe("news.stay", staying).confirmed()
    await left.unsubscribe()
    await left.unsubscribe()  # twice changes nothing

    await speaker.publish("news.left", b"lost")
    await speaker.publish("news.stay", b"kept")  # sent after: its arrival bounds the wait
    await staying.wait_for(1)
    assert gone.messages == []
    with pytest.raises(Unavailable):
        await left.confirmed()
    await bus.close()


async def test_a_failing_handler_does_not_stop_later_messages(connections):
    listener, speaker = connections
    bus, inbox = Fanout(), Inbox()
    await bus.attach(listener)

    async def flaky(subject: str, data: bytes) -> None:
        if data == b"bad":
            raise ValueError("cannot read it")
        await inbox(subject, data)

    await bus.subscribe("news.x", flaky).confirmed()
    await speaker.publish("news.x", b"bad")
    await speaker.publish("news.x", b"good")
    await inbox.wait_for(1)
    assert inbox.messages == [("news.x", b"good")]
    await bus.close()
