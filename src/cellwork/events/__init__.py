"""events: durable streams, publishing with dedupe ids, consumer groups that tell poison
from a blip, dead letters to list, replay or drop, and core-NATS fan-out for what must
reach every instance now."""

from cellwork.events.connection import connect_nats
from cellwork.events.consumer import Consumer, Delivery, Handler
from cellwork.events.deadletters import DeadLetter
from cellwork.events.failures import Poison
from cellwork.events.fanout import Fanout, MessageHandler, Subscription
from cellwork.events.lag import ConsumerLag
from cellwork.events.publisher import Publisher
from cellwork.events.streams import DEAD_LETTER_STREAM, StreamSpec, ensure_streams

__all__ = [
    "DEAD_LETTER_STREAM",
    "Consumer",
    "ConsumerLag",
    "DeadLetter",
    "Delivery",
    "Fanout",
    "Handler",
    "MessageHandler",
    "Poison",
    "Publisher",
    "StreamSpec",
    "Subscription",
    "connect_nats",
    "ensure_streams",
]
