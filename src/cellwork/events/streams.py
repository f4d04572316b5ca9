"""Stream declarations, created (or updated) idempotently by every instance that uses them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError

DEAD_LETTER_STREAM = "DEADLETTER"
DEAD_LETTER_PREFIX = "deadletter"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A JetStream stream: name, subjects, how long ids dedupe and messages live.

    ``max_bytes`` (-1: no limit) caps its size too: past it the oldest messages go.
    """

    name: str
    subjects: tuple[str, ...]
    duplicate_window: float = 120.0
    max_age: float = 7 * 24 * 3600.0
    replicas: int = 1
    max_bytes: int = -1

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            num_replicas=self.replicas,
        )


DEAD_LETTERS = StreamSpec(DEAD_LETTER_STREAM, (f"{DEAD_LETTER_PREFIX}.>",), max_age=30 * 86400.0)


async def ensure_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...]) -> None:
    """Create each stream, or update it when it exists; the dead-letter stream always."""
    # Dead letters get as many copies as the most replicated stream that feeds them.
    dead_letters = replace(DEAD_LETTERS, replicas=max((s.replicas for s in specs), default=1))
    for spec in (dead_letters, *specs):
        try:
            await js.add_stream(spec.config())
        except BadRequestError:
            # Exists with another config (e.g. a changed dedupe window): bring it in line.
            await js.update_stream(spec.config())
