"""events: durable streams, publishing with dedupe ids, consumer groups that tell poison
from a blip, dead letters to list, replay or drop, core-NATS fan-out for what must
reach every instance now, and the transactional outbox."""

from typing import TYPE_CHECKING, Any

from cellwork.events.connection import connect_nats
from cellwork.events.consumer import Consumer, Delivery, Handler
from cellwork.events.deadletters import DeadLetter
from cellwork.events.failures import Poison
from cellwork.events.fanout import Fanout, MessageHandler, Subscription
from cellwork.events.lag import ConsumerLag
from cellwork.events.publisher import Publisher
from cellwork.events.streams import DEAD_LETTER_STREAM, StreamSpec, ensure_streams

if TYPE_CHECKING:
    from cellwork.events.outbox import Outbox
    from cellwork.events.outbox_table import OUTBOX_MIGRATIONS, OUTBOX_OWNER, Backlog

# The outbox needs SQLAlchemy, which services without a database never load.
_OUTBOX_NAMES = {
    "Outbox": "cellwork.events.outbox",
    "OUTBOX_MIGRATIONS": "cellwork.events.outbox_table",
    "OUTBOX_OWNER": "cellwork.events.outbox_table",
    "Backlog": "cellwork.events.outbox_table",
}


def __getattr__(name: str) -> Any:
    module = _OUTBOX_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'cellwork.events' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEAD_LETTER_STREAM",
    "OUTBOX_MIGRATIONS",
    "OUTBOX_OWNER",
    "Backlog",
    "Consumer",
    "ConsumerLag",
    "DeadLetter",
    "Delivery",
    "Fanout",
    "Handler",
    "MessageHandler",
    "Outbox",
    "Poison",
    "Publisher",
    "StreamSpec",
    "Subscription",
    "connect_nats",
    "ensure_streams",
]
