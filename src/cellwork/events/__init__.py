"""events: durable streams, publishing with dedupe ids, consumer groups, dead letters."""

from cellwork.events.connection import connect_nats
from cellwork.events.consumer import Consumer, Delivery, Handler
from cellwork.events.publisher import Publisher
from cellwork.events.streams import DEAD_LETTER_STREAM, StreamSpec, ensure_streams

__all__ = [
    "DEAD_LETTER_STREAM",
    "Consumer",
    "Delivery",
    "Handler",
    "Publisher",
    "StreamSpec",
    "connect_nats",
    "ensure_streams",
]
