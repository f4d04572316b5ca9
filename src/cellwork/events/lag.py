"""How far behind each durable consumer is, and how many dead letters it left.

What ``cellwork status`` shows under its instances: one row per durable consumer of
every stream the NATS server holds (but the dead-letter stream, which nobody consumes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nats.js.client import JetStreamContext

from cellwork.events.deadletters import dead_letter_counts
from cellwork.events.streams import DEAD_LETTER_STREAM


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """One durable consumer's backlog as the server counts it."""

    stream: str
    durable: str
    pending: int  # stored, not yet delivered (num_pending)
    in_flight: int  # delivered, not yet acked (num_ack_pending)
    redelivered: int  # delivered more than once and not yet acked
    dead_letters: int  # in the dead-letter stream for this durable

    def as_json(self) -> dict[str, object]:
        return asdict(self)


async def consumer_lag(js: JetStreamContext) -> list[ConsumerLag]:
    """Every durable consumer's lag, by stream then durable name."""
    dead = await dead_letter_counts(js)
    rows: list[ConsumerLag] = []
    for stream in await js.streams_info():
        name = stream.config.name or ""
        if name == DEAD_LETTER_STREAM:
            continue
        for info in await js.consumers_info(name):
            durable = info.config.durable_name
            if not durable:  # an ephemeral one (a registry watcher): no group, no lag
                continue
            rows.append(
                ConsumerLag(
                    stream=name,
                    durable=durable,
                    pending=int(info.num_pending or 0),
                    in_flight=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                    dead_letters=dead.get((name, durable), 0),
                )
            )
    return sorted(rows, key=lambda row: (row.stream, row.durable))
